#!/usr/bin/env python3
"""Summarises the fio JSON files of scripts/bench-node.sh as a table or one JSON object.

usage: fio-report.py RESULTS-DIR [--json]

RESULTS-DIR holds <job>-<target>.json (fio --output-format=json) for the jobs and targets
below, and meta.json (runtime, sizes, loop settings) written by the script.
"""
import json
import os
import sys

JOBS = [  # (name, direction, what the job is)
    ("seqread", "read", "sequential read 1 MiB QD32"),
    ("seqwrite", "write", "sequential write 1 MiB QD32"),
    ("randread", "read", "random read 4 KiB QD32"),
    ("prefill", "write", "first write 1 MiB QD32 (prefill)"),
]
TARGETS = [("strata", "Strata"), ("plain", "plain file"), ("bindfs_loop", "bindfs+loop")]
SEQREAD_TARGET_BYTES = 1e9  # >= 1 GB/s sequential read on the Strata device
RATIO_TARGET = 0.9          # >= 0.9x the bindfs+loop figure, every job


def load(directory, job, target):
    path = os.path.join(directory, f"{job}-{target}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read()
    # fio may print notices before the JSON document.
    data = json.loads(text[text.index("{"):])
    return data["jobs"][0]


def figures(job, direction):
    if job is None:
        return None
    side = job[direction]
    percentiles = side.get("clat_ns", {}).get("percentile", {})
    return {
        "mbps": side["bw_bytes"] / 1e6,
        "iops": side["iops"],
        "clat_p99_us": percentiles.get("99.000000", 0) / 1e3,
        "errors": job.get("error", 0),
    }


def main():
    directory = sys.argv[1]
    as_json = "--json" in sys.argv[2:]
    with open(os.path.join(directory, "meta.json")) as f:
        meta = json.load(f)
    table = {job: {target: figures(load(directory, job, target), direction) for target, _ in TARGETS}
             for job, direction, _ in JOBS}

    report = {f"node_{key}": value for key, value in meta.items()}
    ratios_met = True
    for job, _, _ in JOBS:
        for target, _ in TARGETS:
            row = table[job][target]
            if row is None:
                continue
            report[f"node_fio_{job}_mbps_{target}"] = round(row["mbps"], 1)
            report[f"node_fio_{job}_iops_{target}"] = round(row["iops"], 1)
            report[f"node_fio_{job}_clat_p99_us_{target}"] = round(row["clat_p99_us"], 1)
        strata = table[job]["strata"]
        for baseline in ("plain", "bindfs_loop"):
            other = table[job][baseline]
            if strata and other and other["mbps"] > 0:
                ratio = strata["mbps"] / other["mbps"]
                report[f"node_fio_{job}_ratio_vs_{baseline}"] = round(ratio, 3)
                if baseline == "bindfs_loop" and job != "prefill" and ratio < RATIO_TARGET:
                    ratios_met = False
    seqread = table["seqread"]["strata"]
    report["node_target_seqread_1gbps_met"] = bool(seqread and seqread["mbps"] * 1e6 >= SEQREAD_TARGET_BYTES)
    report["node_target_0_9x_bindfs_loop_met"] = ratios_met

    if as_json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return

    print(f"Node path: fio, libaio, direct=1, iodepth=32, {meta['fio_runtime_s']} s per job, "
          f"{meta['size_bytes'] // (1 << 20)} MiB per target (MB/s = 10^6 bytes/s)")
    print(f"  Strata: published block device (FUSE export + loop, dio={meta['strata_loop_dio']})")
    print(f"  plain:  a file on the same filesystem ({meta['filesystem']})")
    print(f"  bindfs+loop: loop device (dio={meta['bindfs_loop_dio']}) over a file through "
          f"bindfs {meta['bindfs_options']}\n")
    header = f"{'job':<34}" + "".join(f"{name:>26}" for _, name in TARGETS) + f"{'/plain':>9}{'/bindfs':>9}"
    print(header)
    for job, _, description in JOBS:
        cells = []
        for target, _ in TARGETS:
            row = table[job][target]
            cells.append(f"{'-':>26}" if row is None else f"{row['mbps']:>9.0f} MB/s {row['iops']:>6.0f} io/s")
        ratios = "".join(
            f"{report[key]:>9.2f}" if key in report else f"{'-':>9}"
            for key in (f"node_fio_{job}_ratio_vs_plain", f"node_fio_{job}_ratio_vs_bindfs_loop"))
        print(f"{description:<34}" + "".join(cells) + ratios)
    print()
    seq = report.get("node_fio_seqread_mbps_strata", 0)
    print(f"target: sequential read >= 1000 MB/s on Strata: {seq:.0f} MB/s -> "
          f"{'met' if report['node_target_seqread_1gbps_met'] else 'MISSED'}")
    print(f"target: every job >= {RATIO_TARGET}x bindfs+loop: "
          f"{'met' if ratios_met else 'MISSED'}")


if __name__ == "__main__":
    main()

/*
 * disk-workload: the guest's proof that its disk keeps its writes across a live migration.
 *
 * Runs as the guest's only program (started by scripts/guest/init). It writes 4 KiB blocks to a
 * block device with O_DIRECT, sweeping the device from the first block to the last, round after
 * round, forever. Every block carries a header (magic, the write's sequence number, the round,
 * the block's index) and a checksum of the whole block, so a reader can tell a torn or corrupted
 * block, a block written to the wrong place and a lost (stale) write apart. The program keeps the
 * sequence number it last wrote to every block in memory; that memory moves with the guest, so
 * after a migration it still knows exactly what the disk must hold.
 *
 * Every `verify_every` writes it reads back every block written so far and checks it against that
 * memory. It reports on stdout (the serial console), one line each:
 *   "workload started device=/dev/vda blocks=N"          once
 *   "wrote S"                                            every `report_every` writes; S = writes so far
 *   "verified S blocks=B"                                after a pass: all B blocks hold their last
 *                                                        write, writes 1...S all checked
 *   "ERROR ..."                                          any failed I/O or wrong block
 * After an error the block's expected content is forgotten (so one bad block is reported once)
 * and the program goes on.
 *
 * Usage: disk-workload DEVICE [blocks [report_every [verify_every [write_delay_us]]]]
 * blocks 0 (the default) means the whole device.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WORKLOAD_BLOCK_SIZE 4096
#define WORDS_PER_BLOCK (WORKLOAD_BLOCK_SIZE / 8)
#define READ_BATCH_BLOCKS 64
#define MAGIC 0x53545241544157ULL /* "STRATAW" */

/* The first five words of every block; the rest is filler derived from the sequence number. */
enum { WORD_MAGIC, WORD_SEQUENCE, WORD_ROUND, WORD_INDEX, WORD_CHECKSUM, HEADER_WORDS };

/* A word-at-a-time hash of the block with the checksum word taken as zero (cheap under TCG). */
static uint64_t block_checksum(const uint64_t *words) {
    uint64_t hash = 0xcbf29ce484222325ULL;
    for (int i = 0; i < WORDS_PER_BLOCK; i++) {
        uint64_t word = i == WORD_CHECKSUM ? 0 : words[i];
        hash = (hash ^ word) * 0x100000001b3ULL;
        hash ^= hash >> 29;
    }
    return hash;
}

static void fill_block(uint64_t *words, uint64_t sequence, uint64_t round, uint64_t index) {
    uint64_t state = sequence * 0x9e3779b97f4a7c15ULL + 1;
    words[WORD_MAGIC] = MAGIC;
    words[WORD_SEQUENCE] = sequence;
    words[WORD_ROUND] = round;
    words[WORD_INDEX] = index;
    words[WORD_CHECKSUM] = 0;
    for (int i = HEADER_WORDS; i < WORDS_PER_BLOCK; i++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        words[i] = state;
    }
    words[WORD_CHECKSUM] = block_checksum(words);
}

/* Returns 1 if the block is what the last write to it (sequence, round) put there, else prints why. */
static int check_block(const uint64_t *words, uint64_t index, uint64_t sequence, uint64_t round) {
    if (words[WORD_MAGIC] != MAGIC) {
        printf("ERROR block %llu: no workload header (magic %016llx), expected write %llu round %llu\n",
               (unsigned long long)index, (unsigned long long)words[WORD_MAGIC],
               (unsigned long long)sequence, (unsigned long long)round);
        return 0;
    }
    if (block_checksum(words) != words[WORD_CHECKSUM]) {
        printf("ERROR block %llu: checksum mismatch (header says write %llu round %llu)\n",
               (unsigned long long)index, (unsigned long long)words[WORD_SEQUENCE],
               (unsigned long long)words[WORD_ROUND]);
        return 0;
    }
    if (words[WORD_INDEX] != index) {
        printf("ERROR block %llu: holds block %llu (misplaced write %llu)\n", (unsigned long long)index,
               (unsigned long long)words[WORD_INDEX], (unsigned long long)words[WORD_SEQUENCE]);
        return 0;
    }
    if (words[WORD_SEQUENCE] != sequence || words[WORD_ROUND] != round) {
        printf("ERROR block %llu: holds write %llu round %llu, expected write %llu round %llu (lost or stale write)\n",
               (unsigned long long)index, (unsigned long long)words[WORD_SEQUENCE],
               (unsigned long long)words[WORD_ROUND], (unsigned long long)sequence, (unsigned long long)round);
        return 0;
    }
    return 1;
}

static uint64_t device_blocks(int fd) {
    struct stat info;
    uint64_t bytes = 0;
    if (fstat(fd, &info) == 0 && S_ISBLK(info.st_mode)) {
        if (ioctl(fd, BLKGETSIZE64, &bytes) != 0) bytes = 0;
    } else {
        off_t end = lseek(fd, 0, SEEK_END);
        bytes = end > 0 ? (uint64_t)end : 0;
    }
    return bytes / WORKLOAD_BLOCK_SIZE;
}

/* Reads back blocks [0, written) and checks each against the last write recorded for it. */
static void verify_pass(int fd, uint64_t *batch, uint64_t written, const uint64_t *expected_sequence,
                        const uint64_t *expected_round, uint64_t *forget, uint64_t sequence) {
    uint64_t good = 0;
    for (uint64_t first = 0; first < written; first += READ_BATCH_BLOCKS) {
        uint64_t count = written - first < READ_BATCH_BLOCKS ? written - first : READ_BATCH_BLOCKS;
        ssize_t got = pread(fd, batch, count * WORKLOAD_BLOCK_SIZE, (off_t)(first * WORKLOAD_BLOCK_SIZE));
        if (got != (ssize_t)(count * WORKLOAD_BLOCK_SIZE)) {
            printf("ERROR read blocks %llu-%llu: %s\n", (unsigned long long)first,
                   (unsigned long long)(first + count - 1), got < 0 ? strerror(errno) : "short read");
            continue;
        }
        for (uint64_t i = 0; i < count; i++) {
            uint64_t index = first + i;
            if (expected_sequence[index] == 0) continue; /* forgotten after an earlier error */
            if (check_block(batch + i * WORDS_PER_BLOCK, index, expected_sequence[index], expected_round[index])) {
                good++;
            } else {
                forget[index] = 1;
            }
        }
    }
    printf("verified %llu blocks=%llu\n", (unsigned long long)sequence, (unsigned long long)good);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DEVICE [blocks [report_every [verify_every [write_delay_us]]]]\n", argv[0]);
        return 2;
    }
    const char *device = argv[1];
    uint64_t blocks = argc > 2 ? strtoull(argv[2], NULL, 10) : 0;
    uint64_t report_every = argc > 3 ? strtoull(argv[3], NULL, 10) : 100;
    uint64_t verify_every = argc > 4 ? strtoull(argv[4], NULL, 10) : 1000;
    useconds_t write_delay = argc > 5 ? (useconds_t)strtoul(argv[5], NULL, 10) : 0;
    if (report_every == 0) report_every = 100;
    if (verify_every == 0) verify_every = 1000;
    setvbuf(stdout, NULL, _IOLBF, 0);

    int fd = open(device, O_RDWR | O_DIRECT);
    if (fd < 0) {
        printf("ERROR open %s: %s\n", device, strerror(errno));
        return 1;
    }
    uint64_t available = device_blocks(fd);
    if (blocks == 0 || blocks > available) blocks = available;
    if (blocks == 0) {
        printf("ERROR %s has no room for one %d-byte block\n", device, WORKLOAD_BLOCK_SIZE);
        return 1;
    }
    uint64_t *block = NULL, *batch = NULL;
    uint64_t *expected_sequence = calloc(blocks, sizeof(uint64_t));
    uint64_t *expected_round = calloc(blocks, sizeof(uint64_t));
    uint64_t *forget = calloc(blocks, sizeof(uint64_t));
    if (posix_memalign((void **)&block, WORKLOAD_BLOCK_SIZE, WORKLOAD_BLOCK_SIZE) != 0 ||
        posix_memalign((void **)&batch, WORKLOAD_BLOCK_SIZE, WORKLOAD_BLOCK_SIZE * READ_BATCH_BLOCKS) != 0 ||
        !expected_sequence || !expected_round || !forget) {
        printf("ERROR out of memory for %llu blocks\n", (unsigned long long)blocks);
        return 1;
    }
    printf("workload started device=%s blocks=%llu\n", device, (unsigned long long)blocks);

    uint64_t sequence = 0, written = 0; /* written: how many distinct blocks hold a write */
    for (uint64_t round = 1;; round++) {
        for (uint64_t index = 0; index < blocks; index++) {
            sequence++;
            fill_block(block, sequence, round, index);
            ssize_t put = pwrite(fd, block, WORKLOAD_BLOCK_SIZE, (off_t)(index * WORKLOAD_BLOCK_SIZE));
            if (put == WORKLOAD_BLOCK_SIZE) {
                expected_sequence[index] = sequence;
                expected_round[index] = round;
            } else {
                printf("ERROR write block %llu (write %llu): %s\n", (unsigned long long)index,
                       (unsigned long long)sequence, put < 0 ? strerror(errno) : "short write");
                expected_sequence[index] = 0; /* its content is unknown now */
            }
            if (index + 1 > written) written = index + 1;
            if (sequence % report_every == 0) printf("wrote %llu\n", (unsigned long long)sequence);
            if (sequence % verify_every == 0) {
                verify_pass(fd, batch, written, expected_sequence, expected_round, forget, sequence);
                for (uint64_t i = 0; i < written; i++) {
                    if (forget[i]) expected_sequence[i] = 0, forget[i] = 0;
                }
            }
            if (write_delay) usleep(write_delay);
        }
    }
}

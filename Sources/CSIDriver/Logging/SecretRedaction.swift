import Foundation
import SwiftProtobuf

/// Turns a request into loggable JSON with every secret replaced.
///
/// Every CSI field marked `csi_secret` in proto/csi.proto is a `secrets` map; the test suite reads
/// the proto and checks that `redactedFieldNames` covers every such field, so a secret added by a
/// future spec version cannot slip into the logs unnoticed.
enum SecretRedaction {
    /// JSON names of the fields whose values never reach a log line.
    static let redactedFieldNames: Set<String> = ["secrets"]
    static let placeholder = "[redacted]"

    static func redactedJSON(of message: any SwiftProtobuf.Message) -> String {
        guard let json = try? message.jsonUTF8Data(),
              let object = try? JSONSerialization.jsonObject(with: json)
        else { return "<unencodable \(type(of: message))>" }
        let redacted = redact(object)
        guard let data = try? JSONSerialization.data(withJSONObject: redacted, options: [.sortedKeys]) else {
            return "<unencodable \(type(of: message))>"
        }
        return String(decoding: data, as: UTF8.self)
    }

    private static func redact(_ value: Any) -> Any {
        switch value {
        case let dictionary as [String: Any]:
            var result: [String: Any] = [:]
            for (key, nested) in dictionary {
                if redactedFieldNames.contains(key) {
                    // Keep the keys (useful when debugging which secret is missing), hide the values.
                    if let map = nested as? [String: Any] {
                        result[key] = map.mapValues { _ in placeholder }
                    } else {
                        result[key] = placeholder
                    }
                } else {
                    result[key] = redact(nested)
                }
            }
            return result
        case let array as [Any]:
            return array.map(redact)
        default:
            return value
        }
    }
}

import GRPCNIOTransportHTTP2

/// Mutual TLS for the peer protocol, both ways: each side presents its node certificate and
/// accepts only certificates signed by the cluster CA. Peers are reached by IP address and
/// node certificates need not name them, so hostnames are not checked: membership is the CA.
extension PeerSettings {
    var serverSecurity: HTTP2ServerTransport.Posix.TransportSecurity {
        .mTLS(certificateChain: [.file(path: certificatePath, format: .pem)], privateKey: .file(path: keyPath, format: .pem)) {
            $0.trustRoots = .certificates([.file(path: caPath, format: .pem)])
            // NIOSSL requires a client certificate in this mode (a client without one is refused).
            $0.clientCertificateVerification = .noHostnameVerification
            $0.requireALPN = false
        }
    }

    var clientSecurity: HTTP2ClientTransport.Posix.TransportSecurity {
        .mTLS(certificateChain: [.file(path: certificatePath, format: .pem)], privateKey: .file(path: keyPath, format: .pem)) {
            $0.trustRoots = .certificates([.file(path: caPath, format: .pem)])
            $0.serverCertificateVerification = .noHostnameVerification
        }
    }
}

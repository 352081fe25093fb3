//! The control plane's key material, all ECDSA P-256 because it generates in microseconds (RSA would
//! cost seconds of startup on these machines).

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256,
};

/// Names the serving certificate must cover: the loopback address clients dial, and the in-cluster
/// names and Service IP (first address of `SERVICE_CLUSTER_IP_RANGE`) that Pods use.
const SERVING_NAMES: &[&str] = &[
    "127.0.0.1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
    "10.96.0.1",
];

pub(crate) const SERVICE_CLUSTER_IP_RANGE: &str = "10.96.0.0/12";

pub(crate) struct Pki {
    pub ca_cert_pem: String,
    pub ca_cert_der: Vec<u8>,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    /// PKCS#8 (`PRIVATE KEY`): v1.20's keyutil reads it for the signing key (apiserver) and the
    /// token controller's key (controller-manager).
    pub service_account_key_pem: String,
    /// SPKI (`PUBLIC KEY`): `--service-account-key-file` parses only SEC1 private keys or public
    /// keys, not PKCS#8, so the verifier gets the public half.
    pub service_account_public_pem: String,
}

pub(crate) fn generate() -> Result<Pki, rcgen::Error> {
    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "capstan-testenv-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca = Issuer::new(ca_params, ca_key);

    let serving_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut serving_params = CertificateParams::new(SERVING_NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    serving_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving_params.signed_by(&serving_key, &ca)?;

    let service_account_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;

    Ok(Pki {
        ca_cert_pem: ca_cert.pem(),
        ca_cert_der: ca_cert.der().to_vec(),
        serving_cert_pem: serving_cert.pem(),
        serving_key_pem: serving_key.serialize_pem(),
        service_account_key_pem: service_account_key.serialize_pem(),
        service_account_public_pem: service_account_key.public_key_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_material_has_the_pem_block_types_kubernetes_parses() {
        let pki = generate().expect("generating the PKI");
        assert!(pki.ca_cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki.serving_cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki.service_account_key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(pki.service_account_public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    }
}

//! What `martlet serve` says when it starts, so an operator reading the log knows what is
//! served and where: each listener (address, kind, cores), the storage, and the
//! certificate's subject and expiry (a warning when it is about to run out).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::config::{Backend, Config};
use crate::listeners::Kind;

/// Warn at start when the certificate expires sooner than this.
const CERT_EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

pub fn log(cfg: &Config, listeners: &[(SocketAddr, Kind)], cores: usize) {
    for (addr, kind) in listeners {
        let on = if *kind == Kind::Metrics { "core 0".to_owned() } else { format!("{cores} cores") };
        log::info!("listening on {addr}: {kind}, {on}");
    }
    log::info!("storage: {}", storage(cfg));
    let path = crate::tls::dev_ca_path(cfg);
    match crate::tls::read_certs(&path).ok().and_then(|chain| chain.first().and_then(|leaf| leaf_summary(leaf))) {
        Some((subject, not_after)) => {
            let left = not_after.duration_since(SystemTime::now()).unwrap_or_default();
            let expiry = humantime::format_rfc3339_seconds(not_after);
            let line = format!("certificate {}: subject {subject}, expires {expiry}", path.display());
            if left < CERT_EXPIRY_WARNING {
                log::warn!("{line}: {} days left", left.as_secs() / 86_400);
            } else {
                log::info!("{line}");
            }
        }
        None => log::warn!("certificate {}: subject and expiry not readable", path.display()),
    }
}

/// The backend and where it keeps its data; a PostgreSQL URL without its password.
fn storage(cfg: &Config) -> String {
    let s = &cfg.storage;
    match s.backend {
        Backend::Embedded => format!("embedded (redb) in {}", s.path.display()),
        Backend::Postgres => match s.postgres_url.parse::<postgres::Config>() {
            Ok(pg) => {
                let hosts: Vec<String> = pg.get_hosts().iter().map(|h| format!("{h:?}")).collect();
                format!("postgres, hosts {}, database {}", hosts.join(", "), pg.get_dbname().unwrap_or("(default)"))
            }
            Err(_) => "postgres".to_owned(),
        },
    }
}

/// OID of an X.509 name's commonName attribute (RFC 5280 §4.1.2.4).
const COMMON_NAME: [u64; 4] = [2, 5, 4, 3];

/// The subject's common name and the end of validity of a DER X.509 certificate (RFC 5280
/// §4.1): `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version, serial,
/// signature, issuer, validity SEQUENCE { notBefore, notAfter }, subject, ... }, ... }`.
fn leaf_summary(der: &[u8]) -> Option<(String, SystemTime)> {
    yasna::parse_der(der, |cert| {
        cert.read_sequence(|cert| {
            let tbs = cert.next().read_sequence(|tbs| {
                tbs.read_optional(|r| r.read_tagged(yasna::Tag::context(0), |r| r.read_i64()))?;
                for _serial_signature_issuer in 0..3 {
                    tbs.next().read_der()?;
                }
                let not_after = tbs.next().read_sequence(|v| {
                    read_time(v.next())?;
                    read_time(v.next())
                })?;
                let mut cn = String::new();
                tbs.next().read_sequence_of(|rdn| {
                    rdn.read_set_of(|atv| {
                        atv.read_sequence(|atv| {
                            let oid = atv.next().read_oid()?;
                            let value = atv.next().read_der()?;
                            if oid.components().as_slice() == COMMON_NAME {
                                cn = directory_string(&value);
                            }
                            Ok(())
                        })
                    })
                })?;
                while tbs.read_optional(|r| r.read_der())?.is_some() {}
                Ok((format!("CN={cn}"), not_after))
            })?;
            while cert.read_optional(|r| r.read_der())?.is_some() {}
            Ok(tbs)
        })
    })
    .ok()
}

/// X.509 `Time`: UTCTime or GeneralizedTime.
fn read_time(r: yasna::BERReader) -> yasna::ASN1Result<SystemTime> {
    let unix = if r.lookahead_tag()? == yasna::tags::TAG_UTCTIME {
        r.read_utctime()?.datetime().unix_timestamp()
    } else {
        r.read_generalized_time()?.datetime().unix_timestamp()
    };
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0)))
}

/// A name attribute's text, whichever string type it was written in.
fn directory_string(der: &[u8]) -> String {
    yasna::parse_der(der, |r| r.read_utf8string())
        .or_else(|_| yasna::parse_der(der, |r| r.read_printable_string()))
        .or_else(|_| yasna::parse_der(der, |r| r.read_ia5_string()))
        .map(|s| s.escape_debug().to_string())
        .unwrap_or_else(|_| "(unreadable)".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_subject_and_expiry_of_a_certificate() {
        let mut params = rcgen::CertificateParams::new(vec!["example.org".to_owned()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, "example.org");
        params.not_after = rcgen::date_time_ymd(2031, 5, 6);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (subject, not_after) = leaf_summary(cert.der()).unwrap();
        assert_eq!(subject, "CN=example.org");
        assert_eq!(humantime::format_rfc3339_seconds(not_after).to_string(), "2031-05-06T00:00:00Z");
        assert_eq!(leaf_summary(b"\x30\x03\x02\x01\x01"), None);
    }
}

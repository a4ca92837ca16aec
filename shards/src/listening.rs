//! Whether some socket on this host listens on an address, read from the kernel's socket
//! tables (`/proc/net/tcp`, `/proc/net/tcp6`). [`crate::listener::Claim`] asks this when
//! its bind is refused: connections a previous run of the server left behind on the port
//! (closing, FIN_WAIT) refuse a bind without SO_REUSEPORT too, and must not stop a restart;
//! only a listener means another server.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `st` of a listening socket in the tables.
const TCP_LISTEN: &str = "0A";

/// True if a listening TCP socket holds `addr`'s port on `addr`'s address, or on the
/// wildcard of its family, or (for a wildcard `addr`) on any address of its family.
pub fn someone_listens(addr: SocketAddr) -> std::io::Result<bool> {
    let table = if addr.is_ipv4() { "/proc/net/tcp" } else { "/proc/net/tcp6" };
    let text = std::fs::read_to_string(table)?;
    Ok(text.lines().skip(1).filter_map(listening_address).any(|l| clashes(l, addr)))
}

/// The local address of a table row whose socket listens.
fn listening_address(row: &str) -> Option<SocketAddr> {
    let mut fields = row.split_whitespace();
    let local = fields.nth(1)?;
    if fields.nth(1)? != TCP_LISTEN {
        return None;
    }
    let (ip, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddr::new(table_ip(ip)?, port))
}

/// The table writes an address as 32-bit words in host order (little-endian here).
fn table_ip(hex: &str) -> Option<IpAddr> {
    let words: Option<Vec<u32>> =
        (0..hex.len() / 8).map(|i| u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()).collect();
    let bytes: Vec<u8> = words?.iter().flat_map(|w| w.to_le_bytes()).collect();
    match bytes.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?))),
        _ => None,
    }
}

fn clashes(listening: SocketAddr, addr: SocketAddr) -> bool {
    listening.port() == addr.port()
        && (listening.ip() == addr.ip() || listening.ip().is_unspecified() || addr.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernel_table_rows() {
        let v4 = "   1: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1";
        assert_eq!(listening_address(v4), Some("127.0.0.1:8080".parse().unwrap()));
        let established = v4.replace(" 0A ", " 01 ");
        assert_eq!(listening_address(&established), None);
        let v6 = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 0 0 0 0";
        assert_eq!(listening_address(v6), Some("[::1]:8080".parse().unwrap()));
    }

    #[test]
    fn sees_a_listener_and_not_a_closed_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(someone_listens(addr).unwrap());
        assert!(someone_listens(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port())).unwrap());
        drop(listener);
        assert!(!someone_listens(addr).unwrap());
    }
}

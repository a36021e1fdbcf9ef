//! The process's named listening sockets ("proxy", "admin", …): every listener is bound
//! through [`Listeners::bind`], which takes the socket a predecessor handed over (see
//! [`crate::upgrade`]) when its address matches, and keeps a duplicate of each socket so
//! the process can hand them on to its own successor.
//!
//! Adding a listener is one call to [`Listeners::bind`] with a new name; the upgrade
//! hands over whatever was bound.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;

/// Name of the proxy listener (`listen.address`).
pub const PROXY: &str = "proxy";
/// Name of the admin listener (`admin.address`).
pub const ADMIN: &str = "admin";
/// The TLS listener (`listen.tls.address`).
pub const TLS: &str = "tls";

/// Why a listener could not be had.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({name}): {source}")]
pub struct BindError {
    /// Which listener.
    pub name: &'static str,
    /// The address configured.
    pub addr: SocketAddr,
    /// The OS error.
    pub source: std::io::Error,
}

/// The listening sockets of this process: those inherited from a predecessor (not yet
/// claimed) and those in use (bound or inherited), by name.
#[derive(Debug, Default)]
pub struct Listeners {
    inherited: Vec<(String, std::net::TcpListener)>,
    in_use: Vec<(&'static str, OwnedFd)>,
}

impl Listeners {
    /// No inherited sockets: every listener is bound fresh.
    pub fn fresh() -> Listeners {
        Listeners::default()
    }

    /// The sockets a predecessor handed over, by name. A descriptor that is not a
    /// listening TCP socket (a UDP socket, a connected or merely bound TCP socket,
    /// anything else), or a name given twice, is refused: an error naming it.
    pub fn inherit(named: Vec<(String, OwnedFd)>) -> Result<Listeners, String> {
        let mut inherited: Vec<(String, std::net::TcpListener)> = Vec::with_capacity(named.len());
        for (name, fd) in named {
            if inherited.iter().any(|(n, _)| *n == name) {
                return Err(format!("the inherited socket {name:?} is named twice"));
            }
            if let Some(why) = not_a_listener(&fd) {
                return Err(format!("the inherited socket {name:?} {why}"));
            }
            inherited.push((name, std::net::TcpListener::from(fd)));
        }
        Ok(Listeners {
            inherited,
            in_use: Vec::new(),
        })
    }

    /// The listener `name` on `addr`: the inherited socket of that name when its address
    /// matches `addr` (see [`address_matches`]), else a freshly bound one. A socket of
    /// that name whose address does not match is closed, with a warning (connections
    /// queued on it are lost, which is why the addresses should stay the same across an
    /// upgrade).
    pub async fn bind(
        &mut self,
        name: &'static str,
        addr: SocketAddr,
    ) -> Result<tokio::net::TcpListener, BindError> {
        let err = |source| BindError { name, addr, source };
        let std_listener = match self.take_inherited(name) {
            Some(l) => {
                let actual = l.local_addr().map_err(err)?;
                if address_matches(addr, actual) {
                    tracing::info!(listener = name, address = %actual, "listening on the inherited socket");
                    Some(l)
                } else {
                    tracing::warn!(listener = name, inherited = %actual, configured = %addr, "the inherited socket's address is not the configured one: closing it and binding anew");
                    None
                }
            }
            None => None,
        };
        let std_listener = match std_listener {
            Some(l) => l,
            None => tokio::net::TcpListener::bind(addr)
                .await
                .and_then(|l| l.into_std())
                .map_err(err)?,
        };
        // the duplicate is what a successor gets; the original serves here
        let dup = std_listener.try_clone().map_err(err)?;
        std_listener.set_nonblocking(true).map_err(err)?;
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(err)?;
        self.in_use.push((name, OwnedFd::from(dup)));
        Ok(listener)
    }

    /// The inherited sockets not yet claimed, by name, with their addresses.
    pub fn inherited_addresses(&self) -> Vec<(String, SocketAddr)> {
        self.inherited
            .iter()
            .filter_map(|(n, l)| Some((n.clone(), l.local_addr().ok()?)))
            .collect()
    }

    fn take_inherited(&mut self, name: &str) -> Option<std::net::TcpListener> {
        let i = self.inherited.iter().position(|(n, _)| n == name)?;
        Some(self.inherited.swap_remove(i).1)
    }

    /// Ends binding: inherited sockets nobody claimed are closed (with a warning each),
    /// and the sockets in use are returned for a successor.
    pub fn finish(self) -> Handover {
        for (name, l) in self.inherited {
            let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
            tracing::warn!(listener = %name, address = %addr, "the new configuration has no such listener: closing the inherited socket");
        }
        Handover {
            sockets: self.in_use,
        }
    }
}

/// Duplicates of the listening sockets in use, by name, to give to a successor.
/// Dropping it closes the duplicates (the serving originals are not affected).
#[derive(Debug, Default)]
pub struct Handover {
    sockets: Vec<(&'static str, OwnedFd)>,
}

impl Handover {
    /// The sockets, by name, in the order they were bound.
    pub fn sockets(&self) -> &[(&'static str, OwnedFd)] {
        &self.sockets
    }
}

/// Why `fd` is not a listening TCP socket, or `None`: it must be a stream socket, of
/// an inet family (it has an IP address), listening (`SO_ACCEPTCONN`).
fn not_a_listener(fd: &OwnedFd) -> Option<String> {
    use rustix::net::{sockopt, SocketType};
    match sockopt::socket_type(fd) {
        Ok(SocketType::STREAM) => {}
        Ok(_) => return Some("is not a stream (TCP) socket".into()),
        Err(e) => return Some(format!("is not a socket: {e}")),
    }
    match rustix::net::getsockname(fd).map(SocketAddr::try_from) {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => return Some("is not an IP (TCP) socket".into()),
        Err(e) => return Some(format!("has no address: {e}")),
    }
    match sockopt::socket_acceptconn(fd) {
        Ok(true) => None,
        Ok(false) => Some("is not listening (a connected or merely bound socket)".into()),
        Err(e) => Some(format!("cannot be checked: {e}")),
    }
}

/// Whether an inherited socket bound to `actual` serves the configured `configured`
/// address: the same IP, and the same port unless the config asks for any port (0).
pub fn address_matches(configured: SocketAddr, actual: SocketAddr) -> bool {
    configured.ip() == actual.ip() && (configured.port() == 0 || configured.port() == actual.port())
}

/// Whether sockets a process handed over, `inherited` (name, address), come from this
/// process's predecessor: one of them is the `proxy` listener on the configured `proxy`
/// address (see [`address_matches`]). If not, they are another instance's (its upgrade
/// socket was reached by mistake or through a planted symlink), and taking them over
/// would stop that instance while serving nothing of ours.
pub fn is_predecessor(proxy: SocketAddr, inherited: &[(String, SocketAddr)]) -> bool {
    inherited
        .iter()
        .any(|(n, a)| n == PROXY && address_matches(proxy, *a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn fd<T: Into<OwnedFd>>(s: T) -> OwnedFd {
        s.into()
    }

    /// Red team R2: only listening TCP sockets, each name once, are taken over.
    #[test]
    fn only_listening_tcp_sockets_are_inherited() {
        let listening = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listening.local_addr().unwrap();
        let got = Listeners::inherit(vec![("proxy".into(), fd(listening))]).unwrap();
        assert_eq!(got.inherited_addresses(), [("proxy".to_string(), addr)]);

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let connected = std::net::TcpStream::connect(addr).unwrap();
        let unix = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let (unix_stream, _) = std::os::unix::net::UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let bound_only = {
            use rustix::net::{AddressFamily, SocketType};
            let s = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
            rustix::net::bind(&s, &"127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap();
            s
        };
        for (bad, want) in [
            (fd(udp), "not a stream"),
            (fd(connected), "not listening"),
            (bound_only, "not listening"),
            (fd(unix), "not a stream"),
            (fd(unix_stream), "not an IP"),
            (fd(file), "not a socket"),
        ] {
            let e = Listeners::inherit(vec![("proxy".into(), bad)]).unwrap_err();
            assert!(e.contains("\"proxy\"") && e.contains(want), "{want}: {e}");
        }

        let one = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let two = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let e = Listeners::inherit(vec![("proxy".into(), fd(one)), ("proxy".into(), fd(two))])
            .unwrap_err();
        assert!(e.contains("named twice"), "{e}");
    }

    #[test]
    fn an_inherited_socket_serves_its_own_address_or_port_zero() {
        assert!(address_matches(a("127.0.0.1:8080"), a("127.0.0.1:8080")));
        assert!(address_matches(a("127.0.0.1:0"), a("127.0.0.1:41234")));
        assert!(address_matches(a("0.0.0.0:8080"), a("0.0.0.0:8080")));
        assert!(address_matches(a("[::1]:0"), a("[::1]:5000")));
        assert!(!address_matches(a("127.0.0.1:8081"), a("127.0.0.1:8080")));
        assert!(!address_matches(a("0.0.0.0:8080"), a("127.0.0.1:8080")));
        assert!(!address_matches(a("127.0.0.1:0"), a("[::1]:5000")));
    }

    #[tokio::test]
    async fn bind_takes_the_matching_inherited_socket_and_keeps_a_duplicate() {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        let mut ls = Listeners::inherit(vec![("proxy".to_string(), OwnedFd::from(first))]).unwrap();
        let l = ls.bind(PROXY, a("127.0.0.1:0")).await.unwrap();
        assert_eq!(l.local_addr().unwrap().port(), port);
        // an admin socket was not inherited: bound fresh on another port
        let admin = ls.bind(ADMIN, a("127.0.0.1:0")).await.unwrap();
        assert_ne!(admin.local_addr().unwrap().port(), port);
        let h = ls.finish();
        let names: Vec<_> = h.sockets().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["proxy", "admin"]);
        // the duplicate is the same socket: a connection to it is accepted by `l`
        let dup = std::net::TcpListener::from(h.sockets()[0].1.try_clone().unwrap());
        assert_eq!(dup.local_addr().unwrap().port(), port);
        let client = tokio::net::TcpStream::connect(("127.0.0.1", port));
        let (c, accepted) = tokio::join!(client, l.accept());
        assert!(c.is_ok() && accepted.is_ok());
    }

    #[tokio::test]
    async fn a_mismatched_inherited_socket_is_replaced() {
        let first = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        let mut ls = Listeners::inherit(vec![("proxy".to_string(), OwnedFd::from(first))]).unwrap();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let want = other.local_addr().unwrap();
        drop(other);
        let l = ls.bind(PROXY, want).await.unwrap();
        assert_eq!(l.local_addr().unwrap(), want);
        assert_ne!(want.port(), port);
    }

    #[test]
    fn only_a_process_with_our_proxy_address_is_our_predecessor() {
        let got = |v: &[(&str, &str)]| -> Vec<(String, SocketAddr)> {
            v.iter().map(|(n, s)| (n.to_string(), a(s))).collect()
        };
        let theirs = got(&[("proxy", "127.0.0.1:28080"), ("admin", "127.0.0.1:29091")]);
        assert!(is_predecessor(a("127.0.0.1:28080"), &theirs));
        assert!(!is_predecessor(a("127.0.0.1:48090"), &theirs));
        // the address of their admin listener is not our proxy's either
        assert!(!is_predecessor(a("127.0.0.1:29091"), &theirs));
        assert!(!is_predecessor(a("0.0.0.0:28080"), &theirs));
        assert!(!is_predecessor(a("127.0.0.1:28080"), &[]));
        // port 0 in the config: any port of the same IP (tests), as `bind` takes it
        assert!(is_predecessor(a("127.0.0.1:0"), &theirs));
    }

    #[test]
    fn a_non_tcp_descriptor_is_refused() {
        let (u, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = Listeners::inherit(vec![("proxy".to_string(), OwnedFd::from(u))]).unwrap_err();
        assert!(err.contains("\"proxy\""), "{err}");
    }
}

//! Name resolution that drops link-local and cloud metadata addresses (unless allowed), so
//! that the token is never sent to one, whatever DNS says.

use super::*;

/// Whether `ip` is link-local (169.254.0.0/16, fe80::/10) or a cloud metadata service
/// (AWS's fd00:ec2::254, Alibaba's 100.100.100.200), also as an IPv4-mapped or NAT64 address.
pub(crate) fn is_link_local_or_metadata(ip: IpAddr) -> bool {
    let v4 = |v4: Ipv4Addr| v4.is_link_local() || v4 == Ipv4Addr::new(100, 100, 100, 200);
    match ip {
        IpAddr::V4(ip) => v4(ip),
        IpAddr::V6(ip) => {
            let s = ip.segments();
            let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
            let embedded = if nat64 {
                let [.., a, b, c, d] = ip.octets();
                Some(Ipv4Addr::new(a, b, c, d))
            } else {
                ip.to_ipv4_mapped()
            };
            embedded.is_some_and(v4)
                || (s[0] & 0xffc0) == 0xfe80
                || ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

/// A resolver that drops link-local and metadata addresses (unless allowed), and fails
/// with [`ForbiddenAddress`] when nothing else is left.
#[derive(Clone)]
pub(crate) struct GuardedResolver<R = GaiResolver> {
    pub(super) inner: R,
    pub(super) allow_link_local: bool,
}

/// The resolver's refusal, found again in the connect error's chain by [`send_failure`].
#[derive(Debug)]
pub(super) struct ForbiddenAddress {
    pub(super) host: String,
    pub(super) address: IpAddr,
}

impl fmt::Display for ForbiddenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} resolves only to link-local/metadata addresses such as {}",
            self.host, self.address
        )
    }
}

impl std::error::Error for ForbiddenAddress {}

impl<R> tower_service::Service<Name> for GuardedResolver<R>
where
    R: tower_service::Service<Name> + Send,
    R::Response: Iterator<Item = SocketAddr>,
    R::Error: Into<BoxError>,
    R::Future: Send + 'static,
{
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().to_owned();
        let allow_link_local = self.allow_link_local;
        let resolving = self.inner.call(name);
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = resolving.await.map_err(Into::into)?.collect();
            if allow_link_local {
                return Ok(addrs.into_iter());
            }
            let (refused, allowed): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs
                .into_iter()
                .partition(|addr| is_link_local_or_metadata(addr.ip()));
            if let Some(first) = refused.first() {
                if allowed.is_empty() {
                    return Err(Box::new(ForbiddenAddress {
                        host,
                        address: first.ip(),
                    }) as BoxError);
                }
                tracing::warn!(
                    host = %host,
                    address = %first.ip(),
                    "the Forgejo server's name also resolves to a link-local/metadata address; not connecting to it"
                );
            }
            Ok(allowed.into_iter())
        })
    }
}

//! `POST /cache/purge` on Redis: SCAN MATCH prefix* + UNLINK, on every master of a cluster.

use super::conn::Conn;
use super::{RedisError, RedisStore};
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::Value;
use std::future::Future;

/// Keys fetched per SCAN round trip in [`RedisStore::purge_prefix`].
const SCAN_COUNT: usize = 1000;

impl RedisStore {
    /// Deletes every key starting with `prefix` (SCAN MATCH prefix* + UNLINK; on a cluster, on
    /// every master). Returns how many.
    ///
    /// An operator's explicit request, so an open circuit does not refuse it; each round trip is
    /// bounded by the write timeout rather than the whole purge, which may be long.
    pub async fn purge_prefix(&self, prefix: &str) -> Result<u64, RedisError> {
        let result = self.purge(prefix).await;
        if let Err(e) = &result {
            self.record_failure(e);
        }
        result
    }

    async fn purge(&self, prefix: &str) -> Result<u64, RedisError> {
        let pattern = format!("{}*", escape_glob(prefix));
        let conn = match tokio::time::timeout(self.write_timeout, self.connection()).await {
            Ok(conn) => conn?,
            Err(_) => return Err(RedisError::Timeout),
        };
        match conn {
            Conn::Single(c) => self.purge_node(&mut Conn::Single(c), None, &pattern).await,
            Conn::Cluster(mut c) => {
                // The node addresses come back as the keys of the per-node reply map.
                let all_masters =
                    RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                let reply = self
                    .bounded(c.route_command(&redis::cmd("PING"), all_masters))
                    .await?;
                let mut deleted = 0;
                for (host, port) in node_addresses(&reply)? {
                    let node = SingleNodeRoutingInfo::ByAddress { host, port };
                    deleted += self
                        .purge_node(&mut Conn::Cluster(c.clone()), Some(node), &pattern)
                        .await?;
                }
                Ok(deleted)
            }
        }
    }

    /// SCANs one node (`node` on a cluster, else the single server) and UNLINKs each batch.
    async fn purge_node(
        &self,
        conn: &mut Conn,
        node: Option<SingleNodeRoutingInfo>,
        pattern: &str,
    ) -> Result<u64, RedisError> {
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let scan = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .clone();
            let (next, keys): (u64, Vec<Vec<u8>>) = match (&mut *conn, &node) {
                (Conn::Cluster(c), Some(node)) => {
                    let routing = RoutingInfo::SingleNode(node.clone());
                    let value = self.bounded(c.route_command(&scan, routing)).await?;
                    redis::from_redis_value(&value).map_err(|e| self.client_error(&e))?
                }
                (conn, _) => self.bounded(conn.query(&scan)).await?,
            };
            if !keys.is_empty() {
                // On a cluster the client splits a multi-key UNLINK by slot and sums the counts.
                let unlink = redis::cmd("UNLINK").arg(keys).clone();
                deleted += self.bounded(conn.query::<u64>(&unlink)).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    /// `fut` within the write timeout: each round trip of a purge is bounded, not the whole.
    async fn bounded<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        match tokio::time::timeout(self.write_timeout, fut).await {
            Ok(result) => result.map_err(|e| self.client_error(&e)),
            Err(_) => Err(RedisError::Timeout),
        }
    }
}

/// Escapes the glob metacharacters of SCAN MATCH, so a prefix matches only itself.
fn escape_glob(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `host:port` pairs from the keys of a per-node reply map.
fn node_addresses(reply: &Value) -> Result<Vec<(String, u16)>, RedisError> {
    let Value::Map(entries) = reply else {
        return Err(RedisError::Redis(
            "unexpected reply listing the cluster's masters".into(),
        ));
    };
    entries
        .iter()
        .map(|(addr, _)| {
            let addr: String = redis::from_redis_value(addr)
                .map_err(|_| RedisError::Redis("unreadable cluster node address".into()))?;
            addr.rsplit_once(':')
                .and_then(|(host, port)| Some((host.to_string(), port.parse().ok()?)))
                .ok_or_else(|| RedisError::Redis(format!("bad cluster node address {addr}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_glob_metacharacters() {
        assert_eq!(escape_glob("a:b"), "a:b");
        assert_eq!(escape_glob("a*[x]?"), r"a\*\[x\]\?");
    }
}

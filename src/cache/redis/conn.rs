//! Connections to Redis: made lazily on first use (so a Redis that is down at start-up does not
//! stop promptgate from starting), shared, and dropped after a timeout.

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionInfo, FromRedisValue};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// A connection made on first use and dropped after a timeout. A failed or cancelled (timed-out)
/// connect leaves it empty, so a later operation tries again.
pub(super) struct LazyConn<T> {
    current: ArcSwapOption<T>,
    /// Serialises connects so that concurrent first users wait for one. Held across the connect's
    /// await on purpose: only connecting callers take it, each bounded by its own timeout.
    connecting: tokio::sync::Mutex<()>,
}

impl<T: Clone> LazyConn<T> {
    fn new() -> Self {
        LazyConn {
            current: ArcSwapOption::empty(),
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    async fn get_or_connect<F, Fut>(&self, connect: F) -> redis::RedisResult<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        if let Some(conn) = self.current.load_full() {
            return Ok(T::clone(&conn));
        }
        let _connecting = self.connecting.lock().await;
        if let Some(conn) = self.current.load_full() {
            return Ok(T::clone(&conn));
        }
        let conn = connect().await?;
        self.current.store(Some(Arc::new(conn.clone())));
        Ok(conn)
    }

    /// Forgets the connection; users holding clones finish with it.
    fn reset(&self) {
        self.current.store(None);
    }
}

/// How to reach Redis, and the connection once made.
pub(super) enum Backend {
    Single {
        client: redis::Client,
        config: ConnectionManagerConfig,
        conn: LazyConn<ConnectionManager>,
    },
    Cluster {
        client: ClusterClient,
        conn: LazyConn<ClusterConnection>,
    },
}

impl Backend {
    /// A client for `nodes` (a cluster when `cluster`, else the one server); no I/O.
    pub(super) fn new(
        cluster: bool,
        mut nodes: Vec<ConnectionInfo>,
        timeout: Duration,
    ) -> redis::RedisResult<Backend> {
        if !cluster {
            let info = nodes.pop().expect("parse returns at least one node");
            let client = redis::Client::open(info)?;
            // No retries inside the manager: the circuit breaker paces reconnects, and a
            // retrying reconnect would make every operation wait on it until its timeout.
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(0)
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            return Ok(Backend::Single {
                client,
                config,
                conn: LazyConn::new(),
            });
        }
        // A couple of retries let MOVED/ASK redirections during resharding succeed; the
        // operation's own timeout still bounds the whole thing.
        let client = ClusterClient::builder(nodes)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2)
            .build()?;
        Ok(Backend::Cluster {
            client,
            conn: LazyConn::new(),
        })
    }

    /// The shared connection, made on first use (or after a timeout dropped it).
    pub(super) async fn connection(&self) -> redis::RedisResult<Conn> {
        match self {
            Backend::Single {
                client,
                config,
                conn,
            } => conn
                .get_or_connect(|| {
                    ConnectionManager::new_with_config(client.clone(), config.clone())
                })
                .await
                .map(Conn::Single),
            Backend::Cluster { client, conn } => conn
                .get_or_connect(|| client.get_async_connection())
                .await
                .map(Conn::Cluster),
        }
    }

    /// After a timeout the connection may be dead without the client knowing (a peer that
    /// vanished without a FIN or RST: the client reconnects only on I/O errors, and these would
    /// take the kernel many minutes to report), so the next probe starts afresh.
    pub(super) fn reset(&self) {
        match self {
            Backend::Single { conn, .. } => conn.reset(),
            Backend::Cluster { conn, .. } => conn.reset(),
        }
    }
}

/// A connection handle; both kinds are cheap clones sharing one multiplexed connection (pool).
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    pub(super) async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> redis::RedisResult<T> {
        match self {
            Conn::Single(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

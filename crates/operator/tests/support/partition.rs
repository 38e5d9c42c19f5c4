//! A TCP proxy to the apiserver that a test can cut: while cut, it forwards nothing and
//! answers nothing, as a network partition does (connections hang; none is refused).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// A cuttable proxy in front of the apiserver, with a kubeconfig that goes through it.
pub struct Partition {
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Partition {
    /// Starts the proxy on 127.0.0.1 (the apiserver's certificate names it) in front of the
    /// server of `kubeconfig`, and writes a copy of `kubeconfig` that uses it.
    pub async fn start(kubeconfig: &Path) -> Self {
        let mut config = kube::config::Kubeconfig::read_from(kubeconfig)
            .unwrap_or_else(|e| panic!("reading kubeconfig {}: {e}", kubeconfig.display()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let mut upstream = None;
        for named in &mut config.clusters {
            if let Some(cluster) = named.cluster.as_mut()
                && let Some(server) = cluster.server.as_mut()
            {
                let url: http::Uri = server.parse().expect("kubeconfig server is a URL");
                let authority = url
                    .authority()
                    .expect("server has a host")
                    .as_str()
                    .to_owned();
                upstream = Some(authority);
                *server = format!("https://127.0.0.1:{port}");
            }
        }
        let upstream = upstream.expect("the kubeconfig names a server");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            serde_yaml::to_string(&config).expect("kubeconfig to YAML"),
        )
        .expect("write kubeconfig");
        let cut = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(accept(listener, upstream, cut.clone()));
        Self {
            cut,
            task,
            kubeconfig: path,
            _dir: dir,
        }
    }

    /// The kubeconfig that goes through the proxy.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Stops forwarding in both directions, on open and new connections.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Forwards again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, upstream: String, cut: Arc<AtomicBool>) {
    while let Ok((client, _)) = listener.accept().await {
        let upstream = upstream.clone();
        let cut = cut.clone();
        tokio::spawn(async move {
            wait_while_cut(&cut).await;
            let Ok(server) = TcpStream::connect(&upstream).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::select! {
                () = pipe(client_read, server_write, cut.clone()) => {}
                () = pipe(server_read, client_write, cut) => {}
            }
        });
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: Arc<AtomicBool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        wait_while_cut(&cut).await;
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read just as the cut begins are held back, as a dropped packet would be.
        wait_while_cut(&cut).await;
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

async fn wait_while_cut(cut: &AtomicBool) {
    while cut.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

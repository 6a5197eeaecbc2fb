//! Helpers shared by the binary's integration tests: free ports, the configuration of a test-kit
//! cluster, clients through the proxy, and plain HTTP to the admin listener.

#![allow(dead_code)]

use meridian_testkit::TestCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::NoTls;

/// The password of the `app` user that [`cluster_toml`] configures.
pub const PASSWORD: &str = "pw";

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether Meridian may restart and rewind the nodes itself (their `data_dir` is on this host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirs {
    /// No `data_dir`: Meridian only probes, promotes and repoints.
    Unmanaged,
    /// Each node's `data_dir` is configured: a switchover or rejoin turns an old primary into
    /// a replica with `pg_rewind` and `pg_ctl`.
    Managed,
}

/// `[[users]]` and `[[regions]]` of a configuration for `cluster`: an `app` user logging in to
/// the servers as `postgres`, every node in region `main`, named as in the kit.
pub fn cluster_toml(cluster: &TestCluster, data_dirs: DataDirs) -> String {
    let mut text = format!(
        "[[users]]\nname = \"app\"\npassword = \"{PASSWORD}\"\nserver_user = \"postgres\"\n\
         [[regions]]\nname = \"main\"\n"
    );
    for node in cluster.nodes() {
        text.push_str(&format!(
            "[[regions.nodes]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\n",
            node.name(),
            node.port()
        ));
        if data_dirs == DataDirs::Managed {
            text.push_str(&format!("data_dir = \"{}\"\n", node.data_dir().display()));
        }
    }
    text
}

/// A session through the proxy on `port` as `app`; its connection task runs on the current
/// runtime.
pub async fn connect(port: u16) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={port} user=app password={PASSWORD} dbname=postgres connect_timeout=10"
        ),
        NoTls,
    )
    .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// `GET path` on the admin listener at `port`: the whole response, status line included.
pub async fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

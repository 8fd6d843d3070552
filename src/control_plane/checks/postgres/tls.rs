//! tokio-postgres' TLS hook, backed by the probe's rustls client (`health::tls`). tokio-postgres
//! sends the SSLRequest and, on `S`, hands the TCP stream to [`PgTls::connect`] for the
//! handshake; the session then runs over the returned stream.
//!
//! Channel binding (`SCRAM-SHA-256-PLUS`) is not offered: the stream reports none, so SCRAM runs
//! without it. Under `verify-full` the certificate check already ties the session to the server;
//! under `require` nothing does, which is what `require` means.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};
use tokio_rustls::{client, TlsConnector};

/// One handshake's connector and server name.
pub(super) struct PgTls {
    pub connector: TlsConnector,
    pub name: ServerName<'static>,
}

/// The encrypted session stream.
pub(super) struct PgTlsStream(client::TlsStream<TcpStream>);

impl TlsConnect<TcpStream> for PgTls {
    type Stream = PgTlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<PgTlsStream>> + Send>>;

    fn connect(self, stream: TcpStream) -> Self::Future {
        Box::pin(async move {
            let stream = self.connector.connect(self.name, stream).await?;
            Ok(PgTlsStream(stream))
        })
    }
}

impl TlsStream for PgTlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl AsyncRead for PgTlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for PgTlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

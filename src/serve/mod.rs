//! Serve: the operations centre's HTTP surface — the live page, the JSON API, the live feed (SSE),
//! citizen reports and `/metrics` — on axum.
//!
//! It reads the incident and alert tables through their modules' public read side, and sees cameras through
//! their [`CameraHealth`](crate::health::CameraHealth); it changes nothing but operator state
//! (acknowledgements, resolutions, silences) and hands citizen reports to the incident sink like any other
//! incident.

mod alerts;
mod auth;
mod cameras;
mod config;
mod daily;
mod error;
mod feed;
mod incidents;
mod metrics;
mod page;
mod reports;
mod silences;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::sync::watch;

pub use alerts::{CITIZEN_REPORT_KIND, closing_event};
pub use auth::Caller;
pub use cameras::CameraJson;
pub use config::{MIN_TOKEN_LEN, Role, ServeConfig, TokenConfig};
pub use error::{ApiError, ServeError};
pub use reports::{Filed, ReportLimits, Reports};
pub use state::{AppState, CameraInfo, CameraList, IncidentSubmit, PipelineStats, ServeContext};

/// The running server. Stop it before the runtime it was started on.
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    runtime: tokio::runtime::Handle,
}

impl Server {
    /// Binds `config.listen` and serves on `runtime`.
    pub fn start(
        config: &ServeConfig,
        ctx: ServeContext,
        runtime: tokio::runtime::Handle,
    ) -> Result<Server, ServeError> {
        let std_listener =
            std::net::TcpListener::bind(config.listen).map_err(|source| ServeError::Listen {
                addr: config.listen,
                source,
            })?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| ServeError::Runtime(e.to_string()))?;
        let addr = std_listener
            .local_addr()
            .map_err(|e| ServeError::Runtime(e.to_string()))?;
        let (stop, mut stopped) = watch::channel(false);
        let metrics = Arc::new(metrics::Metrics::new(&ctx)?);
        let feed = feed::Feed::start(&ctx, stopped.clone(), &runtime)
            .map_err(|e| ServeError::Runtime(format!("live feed: {e}")))?;
        let state = AppState {
            feed,
            ctx,
            metrics,
            tokens: auth::Tokens::new(&config.tokens),
            utc_offset_minutes: config.utc_offset_minutes,
            stopping: stopped.clone(),
            reports: Reports::new(&config.reports),
        };
        runtime.spawn(reports::close_idle(state.clone()));
        let app = routes(state);
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(std_listener)
                .map_err(|e| ServeError::Runtime(e.to_string()))?
        };
        let task = runtime.spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
            {
                tracing::error!(error = %e, "http server stopped");
            }
        });
        tracing::info!(%addr, "operations centre at http://{addr}/");
        Ok(Server {
            addr,
            stop,
            task,
            runtime,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, and gives open requests (live feeds end at once) two seconds to finish.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        self.runtime.block_on(async move {
            if tokio::time::timeout(std::time::Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                tracing::warn!("http server: requests still open after 2 s; closing them");
                task.abort();
                let _ = task.await;
            }
        });
    }
}

/// Every route, each part in its own module.
fn routes(state: AppState) -> Router {
    let app = Router::new()
        .merge(page::routes())
        .merge(alerts::routes())
        .merge(incidents::routes())
        .merge(feed::routes())
        .merge(reports::routes())
        .merge(cameras::routes())
        .merge(silences::routes())
        .merge(daily::routes())
        .merge(metrics::routes());
    // Last: counts the requests of every route above.
    metrics::track_requests(app, &state).with_state(state)
}

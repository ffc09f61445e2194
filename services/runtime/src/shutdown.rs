//! A shutdown signal that many tasks can wait on. `run(config, client,
//! shutdown)` takes any future; [`Shutdown::signal`] makes one per service.

use tokio::sync::watch;

/// Fires the shutdown.
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Waits for the shutdown; cheap to clone.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and signal.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Tells every waiter to stop.
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

impl Drop for ShutdownTrigger {
    fn drop(&mut self) {
        self.trigger();
    }
}

impl Shutdown {
    /// A future that completes once the shutdown fires (or its trigger is dropped).
    pub fn signal(&self) -> impl Future<Output = ()> + Send + 'static + use<> {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn ctrl_c_or_term() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A shutdown that fires on Ctrl-C or SIGTERM (spawns a task; call inside a runtime).
pub fn on_ctrl_c() -> Shutdown {
    let (trigger, signal) = channel();
    tokio::spawn(async move {
        ctrl_c_or_term().await;
        trigger.trigger();
    });
    signal
}

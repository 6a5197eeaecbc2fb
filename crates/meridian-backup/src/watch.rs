//! The catalog as a running Meridian sees it: re-read on an interval, so the admin API and the
//! metrics can say which backups exist and how old the newest is without touching the store on
//! every request (an S3 listing costs requests and money); entries already read are not
//! read again, since a catalog entry never changes once written.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::catalog::{self, Listing};
use crate::store::Store;

/// How often the catalog is re-read.
pub const INTERVAL: Duration = Duration::from_secs(60);

/// The last reading.
#[derive(Debug, Clone)]
pub struct Reading {
    /// When it was taken.
    pub at: SystemTime,
    /// The catalog, or why it could not be read.
    pub listing: Result<Arc<Listing>, String>,
}

/// A task re-reading the catalog; dropping the handle does not stop it (it ends with the
/// runtime).
#[derive(Debug, Clone)]
pub struct CatalogWatch {
    /// The location watched.
    pub location: String,
    last: Arc<Mutex<Option<Reading>>>,
}

impl CatalogWatch {
    /// The last reading; `None` before the first one completes.
    pub fn last(&self) -> Option<Reading> {
        self.last.lock().expect("not poisoned").clone()
    }
}

/// Starts re-reading `store`'s catalog every `every`, at once first.
pub fn spawn(store: Store, every: Duration) -> CatalogWatch {
    let watch = CatalogWatch {
        location: store.location().to_owned(),
        last: Arc::new(Mutex::new(None)),
    };
    let last = watch.last.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut known: Arc<Listing> = Arc::default();
        loop {
            ticks.tick().await;
            let listing = catalog::list_after(&store, &known.backups)
                .await
                .map(Arc::new)
                .map_err(|e| format!("{e:#}"));
            if let Ok(listing) = &listing {
                known = listing.clone();
            }
            if let Err(error) = &listing {
                tracing::warn!(location = %store, %error, "cannot read the backup catalog");
            }
            *last.lock().expect("not poisoned") = Some(Reading {
                at: SystemTime::now(),
                listing,
            });
        }
    });
    watch
}

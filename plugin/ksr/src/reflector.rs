//! One reflector per kind: a kube-rs watcher whose events become fenced store writes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use contiv_model::{encode, ModelError, Resource as ModelResource};
use contiv_store::{Store, StoreError, Txn, TxnOp};
use futures::StreamExt;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::networking::v1 as networking;
use kube::runtime::watcher;
use kube::{Api, Client};
use serde::de::DeserializeOwned;

use crate::{KsrConfig, Leadership, Metrics};

/// Where service endpoints come from: EndpointSlices (Kubernetes 1.21 and later), or
/// Endpoints for older clusters. One of them, never both: they share the store prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointsSource {
    EndpointSlices,
    Endpoints,
}

enum ReflectError {
    Store(StoreError),
    /// A fenced write found another leader: stop reflecting.
    NotLeader,
}

/// Runs every reflector until one stops (leadership lost).
pub(crate) async fn reflect_all<S: Store + Clone>(
    client: Client,
    store: S,
    config: KsrConfig,
    metrics: Arc<Metrics>,
    leadership: Leadership,
) {
    let synced = Arc::new(AtomicUsize::new(0));
    let ctx = Ctx {
        store,
        config: config.clone(),
        metrics,
        leadership,
        synced,
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(reflect::<core::Namespace, contiv_model::Namespace, S>(
        Api::all(client.clone()),
        ctx.clone(),
    ));
    tasks.spawn(reflect::<core::Node, contiv_model::Node, S>(
        Api::all(client.clone()),
        ctx.clone(),
    ));
    tasks.spawn(reflect::<core::Pod, contiv_model::Pod, S>(
        Api::all(client.clone()),
        ctx.clone(),
    ));
    tasks.spawn(reflect::<core::Service, contiv_model::Service, S>(
        Api::all(client.clone()),
        ctx.clone(),
    ));
    match config.endpoints_source {
        EndpointsSource::EndpointSlices => {
            tasks.spawn(reflect::<
                discovery::EndpointSlice,
                contiv_model::EndpointSlice,
                S,
            >(Api::all(client.clone()), ctx.clone()))
        }
        EndpointsSource::Endpoints => tasks.spawn(reflect::<
            core::Endpoints,
            contiv_model::EndpointSlice,
            S,
        >(Api::all(client.clone()), ctx.clone())),
    };
    tasks.spawn(reflect::<
        networking::NetworkPolicy,
        contiv_model::NetworkPolicy,
        S,
    >(Api::all(client), ctx));
    // Reflectors run forever unless leadership is lost; then all stop together.
    let _ = tasks.join_next().await;
    tasks.abort_all();
}

#[derive(Clone)]
struct Ctx<S> {
    store: S,
    config: KsrConfig,
    metrics: Arc<Metrics>,
    leadership: Leadership,
    synced: Arc<AtomicUsize>,
}

const REFLECTORS: usize = 6;

impl<S: Store> Ctx<S> {
    async fn fenced(&self, op: TxnOp) -> Result<(), ReflectError> {
        let r = self
            .store
            .txn(Txn {
                compares: vec![self.leadership.fence()],
                success: vec![op],
                failure: vec![],
            })
            .await
            .map_err(ReflectError::Store)?;
        if r.succeeded {
            Ok(())
        } else {
            Err(ReflectError::NotLeader)
        }
    }
}

/// The state of one kind while its watcher runs: what the store holds (by key).
struct KindState {
    kind: usize,
    prefix: String,
    held: BTreeMap<String, Vec<u8>>,
    seen: BTreeSet<String>,
}

impl KindState {
    /// The key of an API object, from its metadata (also for objects the model refuses).
    fn key_of<K: kube::Resource, M: ModelResource>(&self, config: &KsrConfig, obj: &K) -> String {
        let name = obj.meta().name.clone().unwrap_or_default();
        match obj.meta().namespace.as_deref() {
            Some(ns) => format!("{}{}{ns}/{name}", config.prefix, M::kind_prefix()),
            None => format!("{}{}{name}", config.prefix, M::kind_prefix()),
        }
    }

    async fn apply<K, M, S>(&mut self, ctx: &Ctx<S>, obj: &K) -> Result<String, ReflectError>
    where
        K: kube::Resource,
        M: ModelResource + for<'a> TryFrom<&'a K, Error = ModelError>,
        S: Store,
    {
        let key = self.key_of::<K, M>(&ctx.config, obj);
        match M::try_from(obj) {
            Ok(m) => {
                let doc = encode(&m);
                if self.held.get(&key) != Some(&doc) {
                    ctx.fenced(TxnOp::Put {
                        key: key.clone(),
                        value: doc.clone(),
                        lease: None,
                    })
                    .await?;
                    ctx.metrics.writes.fetch_add(1, Ordering::Relaxed);
                    self.held.insert(key.clone(), doc);
                }
            }
            Err(e) => {
                ctx.metrics.invalid[self.kind].fetch_add(1, Ordering::Relaxed);
                tracing::warn!(kind = M::KIND, object = %key, error = %e, "skipped: the model cannot represent it");
                // What the store held for it is no longer true.
                self.remove(ctx, &key).await?;
            }
        }
        ctx.metrics.reflected[self.kind].store(self.held.len() as u64, Ordering::Relaxed);
        Ok(key)
    }

    async fn remove<S: Store>(&mut self, ctx: &Ctx<S>, key: &str) -> Result<(), ReflectError> {
        if self.held.contains_key(key) {
            ctx.fenced(TxnOp::Delete {
                key: key.to_string(),
            })
            .await?;
            ctx.metrics.deletes.fetch_add(1, Ordering::Relaxed);
            self.held.remove(key);
        }
        ctx.metrics.reflected[self.kind].store(self.held.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

async fn reflect<K, M, S>(api: Api<K>, ctx: Ctx<S>)
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    M: ModelResource + for<'a> TryFrom<&'a K, Error = ModelError> + Send,
    S: Store,
{
    let kind = Metrics::kind(M::KIND);
    let mut first_sync = true;
    let mut backoff = Duration::from_millis(100);
    loop {
        // A fresh watcher lists first: its sweep repairs whatever an error left behind.
        let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
        let mut st = KindState {
            kind,
            prefix: format!("{}{}", ctx.config.prefix, M::kind_prefix()),
            held: BTreeMap::new(),
            seen: BTreeSet::new(),
        };
        let outcome: Result<(), ReflectError> = async {
            while let Some(item) = stream.next().await {
                match item {
                    Err(e) => {
                        // 410 Gone and transient API errors: the watcher re-lists on its
                        // next poll; pace it.
                        ctx.metrics.watch_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(kind = M::KIND, error = %e, "watch error");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(ctx.config.max_backoff);
                    }
                    Ok(watcher::Event::Init) => {
                        st.seen.clear();
                        let (kvs, _) = ctx
                            .store
                            .list(&st.prefix)
                            .await
                            .map_err(ReflectError::Store)?;
                        st.held = kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
                    }
                    Ok(watcher::Event::InitApply(obj)) => {
                        let key = st.apply::<K, M, S>(&ctx, &obj).await?;
                        st.seen.insert(key);
                    }
                    Ok(watcher::Event::InitDone) => {
                        let stale: Vec<String> = st
                            .held
                            .keys()
                            .filter(|k| !st.seen.contains(*k))
                            .cloned()
                            .collect();
                        for key in stale {
                            st.remove(&ctx, &key).await?;
                        }
                        ctx.metrics.resyncs.fetch_add(1, Ordering::Relaxed);
                        ctx.metrics.reflected[kind].store(st.held.len() as u64, Ordering::Relaxed);
                        backoff = Duration::from_millis(100);
                        if first_sync {
                            first_sync = false;
                            if ctx.synced.fetch_add(1, Ordering::Relaxed) + 1 == REFLECTORS {
                                ctx.metrics.synced.store(true, Ordering::Relaxed);
                                tracing::info!("every kind is in sync");
                            }
                        }
                    }
                    Ok(watcher::Event::Apply(obj)) => {
                        st.apply::<K, M, S>(&ctx, &obj).await?;
                    }
                    Ok(watcher::Event::Delete(obj)) => {
                        let key = st.key_of::<K, M>(&ctx.config, &obj);
                        st.remove(&ctx, &key).await?;
                    }
                }
            }
            Ok(())
        }
        .await;
        match outcome {
            Err(ReflectError::NotLeader) => return,
            Err(ReflectError::Store(e)) => {
                ctx.metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(kind = M::KIND, error = %e, "store error: resyncing after a pause");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ctx.config.max_backoff);
            }
            Ok(()) => {}
        }
    }
}

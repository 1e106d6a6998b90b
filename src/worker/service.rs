//! The worker service's one owner: builds the Kafka clients, starts the background tasks in one
//! [`Tasks`], runs the consumer loop, and at shutdown drains it, joins every task and leaves the
//! group.

use std::convert::Infallible;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureProducer;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::consumer::Worker;
use super::group::{Consumer_, WorkerContext};
use super::lag::{LagClient, LagWatcher};
use super::observe::{ObservedHandler, Observer};
use super::results::KafkaPublisher;
use super::state::WorkerState;
use super::{Handler, StartAt, Summary, WorkerConfig, WorkerError};
use crate::kafka::admin::{TopicAdmin, TopicError, TopicSpec};
use crate::kafka::{retry_cancellable, Backoff, JobConsumer, KafkaContext, Stopped};
use crate::lifecycle::{Exit, Tasks};

/// How long the background tasks may take to stop once the consumer loop has drained; they stop
/// at once when asked, so only a task stuck in a bug is aborted.
const TASK_GRACE: Duration = Duration::from_secs(1);

/// Creates the results and DLQ topics when they are missing (tansu and many clusters do not
/// auto-create), retrying while the cluster is unreachable.
async fn ensure_report_topics(
    config: &WorkerConfig,
    shutdown: &CancellationToken,
) -> Result<(), WorkerError> {
    if !config.create_topics {
        return Ok(());
    }
    let admin = TopicAdmin::new(&config.kafka).map_err(|source| WorkerError::Client {
        what: "admin client",
        brokers: config.kafka.brokers_text(),
        source,
    })?;
    let specs: Vec<TopicSpec<'_>> = [&config.report.results_topic, &config.report.dlq_topic]
        .into_iter()
        .map(|name| TopicSpec {
            name,
            partitions: config.partitions,
            replication_factor: config.replication_factor,
            configs: &[],
        })
        .collect();
    let mut backoff = Backoff::new(Duration::from_millis(200));
    let created = retry_cancellable(
        &mut backoff,
        shutdown,
        || admin.create(&specs),
        |e, _, _| {
            config.kafka.health().failed("worker", "", &e.to_string());
        },
    )
    .await;
    match created {
        Ok(_) | Err(Stopped::Cancelled) => Ok(()),
        Err(Stopped::Permanent(TopicError::Refused { topic, reason })) => {
            Err(WorkerError::CreateTopic { topic, reason })
        }
        // `create` answers a refusal or an unreachable Kafka, nothing else.
        Err(Stopped::Permanent(other)) => Err(WorkerError::CreateTopic {
            topic: config.report.results_topic.clone(),
            reason: other.to_string(),
        }),
    }
}

/// Runs the worker until `shutdown` is cancelled, then drains and leaves the group.
pub async fn run(
    config: WorkerConfig,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
) -> Result<Summary, WorkerError> {
    let observer = Observer::new(&config);
    run_observed(config, handler, shutdown, observer).await
}

/// [`run`], reporting to `observer` (made with [`Observer::new`] from the same config), whose
/// [`Observer::site`] an HTTP server serves.
pub async fn run_observed(
    config: WorkerConfig,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
    observer: Arc<Observer>,
) -> Result<Summary, WorkerError> {
    let handler: Arc<dyn Handler> = Arc::new(ObservedHandler {
        inner: handler,
        observer: Arc::clone(&observer),
    });
    ensure_report_topics(&config, &shutdown).await?;
    if shutdown.is_cancelled() {
        info!(message = "stopped before the worker started: Kafka was not reached");
        return Ok(Summary::default());
    }

    let kafka_publisher = Arc::new(report_publisher(&config)?);
    let mut bookkeeping = WorkerState::new(config.ordering, config.dedup_capacity)
        .with_max_held_bytes(config.max_held_bytes);
    if !config.dedupe_window.is_zero() {
        bookkeeping.rebuild_on_assign(config.report.max_attempts, config.report.max_attempts_cap);
    }
    let state = Arc::new(Mutex::new(bookkeeping));
    let paused = Arc::new(AtomicBool::new(false));
    let consumer = Arc::new(subscribe(&config, &state, &paused, &observer)?);
    info!(
        message = "worker started",
        brokers = %config.kafka.brokers_text(),
        topic = %config.topic,
        group = %config.group,
        worker = %config.report.worker,
        min_workers = config.scale.min,
        max_workers = config.scale.max,
        ordering = ?config.ordering,
    );

    let (lag_tx, lag_rx) = watch::channel(None);
    let lag_watcher = LagWatcher {
        consumer: Arc::clone(&consumer),
        client: Arc::new(lag_client(&config)?),
        every: config.scale_interval.max(Duration::from_millis(100)),
        observer: Arc::clone(&observer),
        topic: config.topic.clone(),
    };
    let mut tasks: Tasks<Infallible> = Tasks::new(&shutdown);
    tasks.spawn("lag watcher", |stop| lag_watcher.run(lag_tx, stop));

    let mut worker = Worker::new(
        config,
        handler,
        kafka_publisher,
        state,
        paused,
        consumer,
        observer,
    );
    // The loop runs until the signal. A background task that ends before it is a bug the worker
    // cannot run on without (the pool size would follow a frozen lag): it stops, as on a signal.
    let ended_early = tokio::select! {
        () = worker.run(&shutdown, lag_rx) => None,
        ended = tasks.ended() => (!shutdown.is_cancelled()).then_some(ended),
    };
    if let Some(ended) = &ended_early {
        error!(message = "a worker task stopped unexpectedly; stopping the worker", task = ended.name, error = %ended.reason());
    }
    worker.drain().await;
    for ended in tasks.shutdown(TASK_GRACE).await {
        if !matches!(ended.exit, Exit::Done) {
            error!(message = "a worker task did not stop cleanly", task = ended.name, error = %ended.reason());
        }
    }
    let (summary, consumer) = worker.finish();
    // Closing leaves the group (the revoke callback commits once more); it blocks, so off the runtime.
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    info!(
        message = "worker stopped",
        succeeded = summary.succeeded,
        dead_lettered = summary.dead_lettered,
        duplicates_skipped = summary.duplicates,
        malformed = summary.malformed,
        expired = summary.expired,
        future_slots = summary.future_slots,
        crashed = summary.crashed,
        undeliverable_reports = summary.undeliverable,
        aborted = summary.aborted,
        skipped = summary.skipped,
        cancelled = summary.cancelled,
    );
    match ended_early {
        Some(ended) => Err(WorkerError::TaskEnded {
            task: ended.name,
            reason: ended.reason(),
        }),
        None => Ok(summary),
    }
}

/// The producer of the results and dead letters.
fn report_publisher(config: &WorkerConfig) -> Result<KafkaPublisher, WorkerError> {
    let producer: FutureProducer<KafkaContext> = config
        .kafka
        .report_producer(&config.report.worker)
        .create_with_context(config.kafka.context("worker producer"))
        .map_err(|source| WorkerError::Client {
            what: "producer",
            brokers: config.kafka.brokers_text(),
            source,
        })?;
    Ok(KafkaPublisher {
        producer,
        health: Arc::clone(config.kafka.health()),
        retry_backoff: Duration::from_millis(200),
        undeliverable: Default::default(),
    })
}

/// The group consumer of the job topic, subscribed; its callbacks keep `state` and `paused`.
fn subscribe(
    config: &WorkerConfig,
    state: &Arc<Mutex<WorkerState>>,
    paused: &Arc<AtomicBool>,
    observer: &Arc<Observer>,
) -> Result<Consumer_, WorkerError> {
    let consumer: Consumer_ = config
        .kafka
        .job_consumer(&JobConsumer {
            group: &config.group,
            client_id: &config.report.worker,
            from_earliest: config.start == StartAt::Earliest,
            session_timeout: config.session_timeout,
            shutdown_grace: config.shutdown_grace,
        })
        .create_with_context(WorkerContext {
            state: Arc::clone(state),
            paused: Arc::clone(paused),
            kafka: config.kafka.context("worker"),
            observer: Arc::clone(observer),
        })
        .map_err(|source| WorkerError::Client {
            what: "consumer",
            brokers: config.kafka.brokers_text(),
            source,
        })?;
    consumer
        .subscribe(&[&config.topic])
        .map_err(|source| WorkerError::Subscribe {
            topic: config.topic.clone(),
            source,
        })?;
    Ok(consumer)
}

/// The lag watcher's client (see [`LagClient`]).
fn lag_client(config: &WorkerConfig) -> Result<LagClient, WorkerError> {
    config
        .kafka
        .lag_watcher(&config.report.worker)
        .create_with_context(config.kafka.context("worker"))
        .map_err(|source| WorkerError::Client {
            what: "lag watcher",
            brokers: config.kafka.brokers_text(),
            source,
        })
}

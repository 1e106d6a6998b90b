//! `cronq run` as one service: the one owner of a dispatcher's lifecycle. `cli/run.rs` only
//! configures it; the pipeline is built in `pipeline.rs`, the group member's work is in
//! `member.rs`.
//!
//! ```text
//!  start ──► validate the schedule ──► connect ──► state topic (S shards) ──► join the group
//!    │        tasks (one Tasks set): control follower, Kafka watch, cursor writer, orphan watchdog
//!    │
//!    ├─ Assigned(shards) ─► takeover: read each shard's cursor, compile the shard's jobs, catch up
//!    ├─ tick             ─► TickLoop::tick (every owned shard) ─► owned shards to the cursor writer
//!    │                      (a task: it writes each shard's cursor once a minute, also while a tick
//!    │                      waits for a full backlog)
//!    ├─ Revoked(shards)  ─► handover: wait for acks (≤ --shutdown-grace), write cursors, release
//!    ├─ a task ended     ─► an error: stop as at SIGTERM, then fail
//!    └─ SIGTERM          ─► no new minute; the minute in progress is sent whole; acks (≤ grace);
//!                           cursors; the tasks stopped and joined; leave the group; undelivered
//!                           counted in the log
//!  (handover and SIGTERM first send the records waiting for their jitter offset: see `delay`)
//! ```
//!
//! Outside a group (`--dry-run`, `--from/--until`) the loop runs one shard holding every job and
//! writes no cursor.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::control::{self, ControlFollower, Pauses};
use super::group::{self, GroupEvent, Membership, MembershipConfig, StateTopic};
use super::member::{schedule_md5, Member, MemberSetup};
use super::observe::Observer;
use super::pipeline::Pipeline;
use super::schedule_topic::{ShardEdits, TopicSchedule};
use super::tick_loop::{ScheduleSource, TickLoop};
use super::watchdog::Watchdog;
use super::Scheduler;
use crate::clock::{until_next_wake, ManualClock, Minute};
use crate::lifecycle::{Ended, Tasks};
use crate::schedule::{self, ShardFilter};

pub use super::config::{GroupConfig, ServiceConfig, ServiceError, SinkConfig};

/// Replays the window `[from, until)` as fast as possible into the sink and waits for every
/// dispatch to settle. Never joins a group, writes no cursor.
pub async fn replay(
    schedule: schedule::Schedule,
    sink_config: SinkConfig,
    queue_capacity: usize,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<u64, ServiceError> {
    // [from, until): the first slot is the first whole minute at or after `from`.
    let first = Minute::containing(from - chrono::Duration::nanoseconds(1)).next();
    let last = Minute::containing(until - chrono::Duration::nanoseconds(1));
    let clock = ManualClock::new(last.start().unwrap_or(until));
    let scheduler = Scheduler::new(schedule, Minute(first.0 - 1));
    info!(message = "replaying window", from = %first, until = %last, jobs = scheduler.scheduled());
    let mut pipeline = Pipeline::replay(&sink_config, queue_capacity, |tx| {
        TickLoop::new(Arc::new(clock), scheduler, None, tx).replaying()
    });
    let report = pipeline.tick_loop.tick().await;
    let (dispatched, draining) = pipeline.close();
    if report.is_err() {
        let e = draining.closed().await;
        error!(message = "replay stopped early", dispatched, error = %e);
        return Err(e);
    }
    info!(message = "window replayed", dispatched);
    draining.finish(dispatched, None).await?;
    Ok(dispatched)
}

/// Runs a live dispatcher until `shutdown` is cancelled.
pub async fn run(config: ServiceConfig, shutdown: CancellationToken) -> Result<(), ServiceError> {
    match config.group.clone() {
        None => run_alone(config, shutdown).await,
        Some(group) => run_in_group(config, group, shutdown).await,
    }
}

async fn run_alone(config: ServiceConfig, shutdown: CancellationToken) -> Result<(), ServiceError> {
    let (schedule, digest) = schedule::load(&config.schedule, config.load.clone())?;
    let observer = config.observer.clone();
    observer.schedule_loaded(&config.schedule, &digest.to_string());
    let scheduler = Scheduler::new(schedule, Minute::containing(config.clock.now()));
    info!(message = "cronq dispatcher started", schedule = %config.schedule.display(), jobs = scheduler.scheduled(), md5 = %digest, group = "none (dry run)");
    let source = ScheduleSource::new(config.schedule.clone(), Some(digest), config.load.clone());
    let mut pipeline = Pipeline::start(&config, |tx| {
        TickLoop::new(Arc::clone(&config.clock), scheduler, Some(source), tx)
    });
    pipeline.observe();
    let mut died = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(until_next_wake(&*config.clock, config.tick)) => {}
            e = pipeline.sink_ended() => {
                died = Some(e);
                break;
            }
        }
        if let Err(stop) = pipeline.tick(&shutdown).await {
            died = stop;
            break;
        }
    }
    observer.stopping();
    let (dispatched, draining) = pipeline.close();
    if let Some(e) = died {
        error!(message = "the dispatcher cannot go on; stopping", dispatched, error = %e);
        return Err(e);
    }
    let undelivered = draining
        .finish(dispatched, Some(config.shutdown_grace))
        .await?;
    info!(message = "dispatcher stopped", dispatched, undelivered);
    Ok(())
}

/// A background task of a group member that ended while the member ran: an error the member
/// stops on.
fn task_died(ended: Ended<Infallible>) -> ServiceError {
    ServiceError::Task {
        what: ended.name,
        reason: ended.reason(),
    }
}

async fn run_in_group(
    config: ServiceConfig,
    group: GroupConfig,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let SinkConfig::Kafka(producer_config) = &config.sink else {
        return run_alone(config, shutdown).await;
    };
    let observer = config.observer.clone();
    // File mode: validate the whole file now (a bad file at start is an error); keep no job yet.
    let digest = match &group.schedule_topic {
        Some(_) => None,
        None => {
            let mut options = config.load.clone();
            options.shards = ShardFilter::only(1, []);
            let (_, digest) = schedule::load(&config.schedule, options)?;
            observer.schedule_loaded(&config.schedule, &digest.to_string());
            Some(digest)
        }
    };
    // The member's background tasks (control follower, cursor writer, orphan watchdog, Kafka
    // watch). Their own token, not a child of `shutdown`: they run until the member has released
    // its shards, and stop then.
    let mut tasks: Tasks<Infallible> = Tasks::new(&CancellationToken::new());
    // Connecting retries for as long as the broker is away: a signal meanwhile stops the process.
    let start = async {
        let client = Arc::new(
            producer_config
                .kafka
                .connect(producer_config.retry_backoff)
                .await,
        );
        let shards = group::ensure_state_topic(
            &client,
            &producer_config.kafka,
            &group.state_topic,
            group.shards,
            group.replication_factor,
        )
        .await?;
        // Pauses are followed from before the first takeover: a paused job's slot is never sent
        // because this member did not know of its pause yet.
        let control_topic = control::control_topic(&group.group);
        control::ensure_control_topic(
            &client,
            &producer_config.kafka,
            &control_topic,
            Some(group.replication_factor),
            producer_config.retry_backoff,
        )
        .await?;
        if let Some(topic) = &group.schedule_topic {
            crate::store::ensure_topic(
                &client,
                &producer_config.kafka,
                topic,
                shards,
                Some(group.replication_factor),
                producer_config.retry_backoff,
            )
            .await?;
        }
        let (follower, follow) = ControlFollower::new(Arc::clone(&client), control_topic);
        tasks.spawn_until_cancelled("the control topic follower", follow);
        follower.synced().await;
        Ok::<_, ServiceError>((client, shards, follower))
    };
    let (client, shards, follower) = tokio::select! {
        started = start => started?,
        _ = shutdown.cancelled() => {
            info!(message = "stopped before the dispatcher started: Kafka was not reached");
            return Ok(());
        }
    };
    // The jobs API (topic mode only): the owned shards' versions and the directory of owners.
    let api = match (&config.api, &group.schedule_topic) {
        (Some(front), Some(_)) => Some((
            Arc::clone(front),
            Arc::new(super::api::book::Versions::default()),
            Arc::new(super::api::book::Directory::default()),
        )),
        _ => None,
    };
    // Topic mode: the shards' jobs come from the schedule topic, followed by a task of the member.
    let (topic, mut topic_edits) = match &group.schedule_topic {
        Some(name) => {
            let (topic, follower, edits) = TopicSchedule::new(
                Arc::clone(&client),
                &producer_config.kafka,
                name.clone(),
                shards,
                config.load.clone(),
                observer.clone(),
                api.as_ref().map(|(_, versions, _)| Arc::clone(versions)),
            )?;
            tasks.spawn("the schedule topic follower", |token| async move {
                follower.run(token).await;
                Ok(())
            });
            observer.schedule_topic_read(
                true,
                format!("{name}: no shard owned yet (each owned shard's partition is read at its takeover)"),
            );
            (Some(topic), Some(edits))
        }
        None => (None, None),
    };
    let state = Arc::new(
        StateTopic::new(Arc::clone(&client), group.state_topic.clone(), shards)
            .with_health(Arc::clone(producer_config.kafka.health())),
    );
    if let (Some((front, versions, directory)), Some(name)) = (&api, &group.schedule_topic) {
        front.start(super::api::core::Core::new(super::api::core::CoreSetup {
            client: Arc::clone(&client),
            topic: name.clone(),
            shards,
            options: topic
                .as_ref()
                .map_or_else(|| config.load.clone(), |t| t.load_options().clone()),
            versions: Arc::clone(versions),
            directory: Arc::clone(directory),
            state: Arc::clone(&state),
            clock: Arc::clone(&config.clock),
            retry_backoff: producer_config.retry_backoff,
            own_writes: topic.as_ref().and_then(TopicSchedule::own_writes),
        }));
    }
    // Only an observer that is on shows the broker's reachability: otherwise nothing to update.
    if observer.is_on() {
        tasks.spawn_until_cancelled(
            "the Kafka reachability watch",
            watch_kafka(
                Arc::clone(&observer),
                Arc::clone(producer_config.kafka.health()),
                producer_config.kafka.brokers_text(),
            ),
        );
    }
    let mut load = config.load.clone();
    load.shards = ShardFilter::only(shards, []);
    let source = digest.map(|d| ScheduleSource::new(config.schedule.clone(), Some(d), load));
    let mut pipeline = Pipeline::start(&config, |tx| {
        TickLoop::without_shards(Arc::clone(&config.clock), source, tx)
            .with_pauses(Pauses::new(follower.clone()).with_shard_count(shards))
    });
    pipeline.tick_loop.sync_pauses();
    let (events_tx, mut events) = mpsc::channel(16);
    let membership = Membership::start(
        MembershipConfig {
            kafka: producer_config.kafka.clone(),
            group: group.group.clone(),
            member: group.owner.clone(),
            state_topic: group.state_topic.clone(),
            session_timeout: group.session_timeout,
            handover_timeout: config.shutdown_grace + Duration::from_secs(5),
        },
        events_tx,
    )?;
    let schedule_from = match &group.schedule_topic {
        Some(topic) => format!("topic {topic}"),
        None => config.schedule.display().to_string(),
    };
    info!(message = "cronq dispatcher started", schedule = %schedule_from, md5 = %digest.map(|d| d.to_string()).unwrap_or_default(), group = %group.group, state_topic = %group.state_topic, shards, member = %group.owner);
    let (mut member, writer) = Member::new(MemberSetup {
        owner: group.owner.clone(),
        state: Arc::clone(&state),
        shards,
        clock: Arc::clone(&config.clock),
        grace: config.shutdown_grace,
        // The previous owner hears of the rebalance at its next heartbeat (a third of the
        // session); its handover then takes well under a second when its acks are in.
        handover_bound: group.session_timeout / 3 + Duration::from_secs(3),
        observer: observer.clone(),
        beat: pipeline.beat().cloned(),
        control: follower,
        poll: config.tick,
        topic,
        api_url: api.as_ref().and_then(|(front, _, _)| front.advertise_url()),
    });
    tasks.spawn("the cursor writer", |token| async move {
        writer.run(token).await;
        Ok(())
    });
    let watchdog = Watchdog {
        state,
        shards,
        owner: group.owner.clone(),
        clock: Arc::clone(&config.clock),
        view: member.view(),
        rejoiner: membership.rejoiner(),
        poll: config.tick,
        observer: observer.clone(),
        directory: api.as_ref().map(|(_, _, directory)| Arc::clone(directory)),
    };
    tasks.spawn("the orphan watchdog", |token| async move {
        watchdog.run(token).await;
        Ok(())
    });
    let mut died: Option<ServiceError> = None;
    loop {
        enum Next {
            Tick,
            Edits(ShardEdits),
            Event(GroupEvent),
            Stop,
            Died(ServiceError),
        }
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => Next::Stop,
            event = events.recv() => event.map_or_else(|| Next::Died(ServiceError::Task {
                what: "the group membership",
                reason: "its thread ended".into(),
            }), Next::Event),
            Some(batch) = next_edits(&mut topic_edits) => Next::Edits(batch),
            _ = tokio::time::sleep(until_next_wake(&*config.clock, config.tick)) => Next::Tick,
            e = pipeline.sink_ended() => Next::Died(e),
            ended = tasks.ended() => Next::Died(task_died(ended)),
        };
        match next {
            Next::Stop => break,
            Next::Died(e) => {
                died = Some(e);
                break;
            }
            Next::Edits(batch) => {
                member.apply_edits(&mut pipeline.tick_loop, batch);
                // A closed sink is reported by `sink_ended` on the next turn.
                let _ = pipeline.tick_loop.send_late().await;
            }
            Next::Event(GroupEvent::Assigned(shards)) => {
                member
                    .take_over(&mut pipeline.tick_loop, shards, &shutdown)
                    .await;
            }
            Next::Event(GroupEvent::Revoked { shards, lost, done }) => {
                member
                    .revoke(
                        &mut pipeline.tick_loop,
                        pipeline.delay.as_ref(),
                        &shards,
                        lost,
                    )
                    .await;
                let _ = done.send(());
            }
            Next::Tick => {
                member.start_waiting(&mut pipeline.tick_loop).await;
                if let Err(stop) = pipeline.tick(&shutdown).await {
                    died = stop;
                    break;
                }
                member.retire_finished(&pipeline.tick_loop).await;
                let md5 = schedule_md5(&mut pipeline.tick_loop);
                member.publish(&pipeline.tick_loop, &md5);
            }
        }
    }

    observer.stopping();
    info!(message = "shutting down", grace = %humantime::format_duration(config.shutdown_grace));
    let undelivered = member
        .release_all(&mut pipeline.tick_loop, pipeline.delay.as_ref())
        .await;
    // Every shard is released: the background tasks are done with.
    tasks.shutdown(config.shutdown_grace).await;
    // Nothing is owned any more: the revoke that leaving triggers must not wait for an answer.
    drop(events);
    membership.leave();
    let (dispatched, draining) = pipeline.close();
    if let Some(e) = died {
        error!(message = "the dispatcher cannot go on; stopped after writing the cursors of its shards", dispatched, undelivered, error = %e);
        return Err(e);
    }
    draining
        .finish(dispatched, Some(Duration::from_millis(200)))
        .await?;
    if undelivered > 0 {
        warn!(message = "dispatcher stopped; dispatches left undelivered will be re-sent by the next owner from the cursor", dispatched, undelivered);
    } else {
        info!(
            message = "dispatcher stopped; every dispatch was acked",
            dispatched
        );
    }
    Ok(())
}

/// The next records of the schedule topic follower (topic mode); never ready in the file mode.
async fn next_edits(edits: &mut Option<mpsc::Receiver<ShardEdits>>) -> Option<ShardEdits> {
    match edits {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Keeps the readiness check `kafka` in step with the connection's reachability, once a second
/// (off the tick loop: a loop waiting for a full queue must not leave it stale).
async fn watch_kafka(observer: Arc<Observer>, health: Arc<crate::kafka::Health>, brokers: String) {
    observer.kafka_reachable(true, format!("reached {brokers}"));
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut down = false;
    loop {
        every.tick().await;
        let now_down = health.is_down();
        if now_down != down {
            down = now_down;
            if down {
                observer.kafka_reachable(
                    false,
                    format!("cannot reach Kafka at {brokers}; dispatches wait and are retried"),
                );
            } else {
                observer.kafka_reachable(true, format!("reached {brokers}"));
            }
        }
    }
}

//! The supervisor's decisions for one service, as a pure state machine: restart policy,
//! exponential backoff, the health window after an update, and stop requests.
//!
//! [`Machine::handle`] takes an [`Event`] and the current time as a value and returns the
//! [`Action`]s for the I/O layer ([`crate::supervise`]) to carry out. Nothing here reads
//! a clock, touches a file, signals a process or awaits: the same sequence of events and
//! times always gives the same actions, and the unit tests below drive it as tables.
//! The rules are described in `docs/daemon.md` ("The supervisor's state machine").

use appmgr_policy::RestartPolicy;
use serde::Serialize;
use std::time::{Duration, Instant};

/// A run that lasted this long resets the backoff: the next failure waits the base delay.
pub const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// The delay doubles per failed run up to `2^MAX_DOUBLINGS` times the base (then the
/// maximum applies anyway).
const MAX_DOUBLINGS: u32 = 20;

/// A service's state as `Status` and the `ServiceStateChanged` signal show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Launched, waiting for `READY=1` (`ready = "notify"`).
    Starting,
    /// Launched (`ready = "started"`).
    Running,
    /// Launched and reported `READY=1`.
    Ready,
    /// Ended, waiting for its restart delay.
    Backoff,
    /// Asked to stop, the process has not ended yet.
    Stopping,
    /// Not running and not to be restarted (clean end, stop, or before a rollback).
    Stopped,
    /// Not running after a failure the restart policy does not restart, or a failed restart.
    Failed,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Running => "running",
            State::Ready => "ready",
            State::Backoff => "backoff",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Failed => "failed",
        }
    }

    /// Whether a process of the service exists in this state.
    pub fn has_process(self) -> bool {
        matches!(
            self,
            State::Starting | State::Running | State::Ready | State::Stopping
        )
    }
}

/// The settings the decisions depend on (from the service settings of the launched version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub restart: RestartPolicy,
    pub restart_delay_ms: u64,
    pub restart_delay_max_ms: u64,
    /// `ready = "notify"`: the run is `Starting` until `READY=1`.
    pub needs_ready: bool,
    pub stop_timeout_s: u32,
}

/// The window after an update in which the new version must prove itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Health {
    pub from_version: String,
    pub to_version: String,
    pub crashes: u32,
    pub max_crashes: u32,
    pub timeout_s: u32,
    #[serde(skip)]
    pub deadline: Instant,
    pub needs_ready: bool,
}

impl Health {
    /// The window of an update `from` → `to` applied at `now`: `max_crashes` crashes (at
    /// least 1) or, with `needs_ready`, no `READY=1` within `timeout_s` fail it.
    pub fn open(
        from_version: String,
        to_version: String,
        max_crashes: u32,
        timeout_s: u32,
        needs_ready: bool,
        now: Instant,
    ) -> Health {
        Health {
            from_version,
            to_version,
            crashes: 0,
            max_crashes: max_crashes.max(1),
            timeout_s,
            deadline: now + Duration::from_secs(timeout_s.into()),
            needs_ready,
        }
    }
}

/// How a run ended, as the reaper saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this status.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Reaped, but neither an exit status nor a signal.
    Ended,
    /// Could not be reaped.
    Lost,
}

impl Exit {
    /// From the reaped status (`None`: not reaped).
    pub fn of(status: Option<std::process::ExitStatus>) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match status {
            Some(st) => match (st.code(), st.signal()) {
                (Some(c), _) => Exit::Code(c),
                (None, Some(sig)) => Exit::Signal(sig),
                _ => Exit::Ended,
            },
            None => Exit::Lost,
        }
    }

    /// Only status 0 is a success; everything else counts as a crash.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }

    /// For `last-exit` and the journal.
    pub fn describe(self) -> String {
        match self {
            Exit::Code(c) => format!("exited with status {c}"),
            Exit::Signal(sig) => format!("killed by signal {sig}"),
            Exit::Ended => "ended".to_string(),
            Exit::Lost => "lost".to_string(),
        }
    }
}

/// What happened to the service. `generation` names the launch an event belongs to; an
/// event of an older launch is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A launch succeeded (a new generation starts). `window` opens a health window (an
    /// update); without one an open window carries over to the new run. `restart`: the
    /// launch answers [`Action::Launch`] (a restart after the backoff), not a request.
    Launched {
        rules: Rules,
        window: Option<Health>,
        restart: bool,
    },
    /// The launch that [`Action::Launch`] asked for failed.
    RestartFailed { reason: String },
    /// The run sent `READY=1`.
    Ready { generation: u64 },
    /// The run ended.
    Exited { generation: u64, exit: Exit },
    /// `Stop`, a shutdown, an update, a rollback: end the run, do not restart it.
    StopRequested,
    /// `Kill` is about to end the run from outside: its end is not a crash to restart from.
    KillRequested,
    /// The restart delay asked for by [`Action::RestartAt`] has passed.
    RestartDue { generation: u64 },
    /// The health deadline asked for by [`Action::HealthDeadlineAt`] has passed.
    HealthDeadline { generation: u64 },
}

/// Why a health window closed successfully.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passed {
    /// The new version sent `READY=1`.
    Ready,
    /// The window's time passed with fewer crashes than allowed (`ready = "started"`).
    Window,
}

/// What the I/O layer has to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Signal the new state on D-Bus.
    Announce(State),
    /// Journal the end of a run (`success`: level info, else warning).
    Ended {
        desc: String,
        success: bool,
        ran: Duration,
    },
    /// Launch the service now; report [`Event::Launched`] or [`Event::RestartFailed`].
    Launch,
    /// Deliver [`Event::RestartDue`] for `generation` at `at`.
    RestartAt { at: Instant, generation: u64 },
    /// Deliver [`Event::HealthDeadline`] for `generation` at `at`.
    HealthDeadlineAt { at: Instant, generation: u64 },
    /// Journal that the update passed its health window.
    Accepted {
        from_version: String,
        to_version: String,
        why: Passed,
    },
    /// The update failed its health window: stop the service (it is no longer wanted),
    /// roll the app back from `to_version` to `from_version`, record why, start it again.
    RollBack {
        from_version: String,
        to_version: String,
        reason: String,
    },
    /// SIGTERM the run; SIGKILL what is left of it at `kill_at`; wait for its end.
    Terminate { kill_at: Instant },
}

/// The supervision state of one service.
#[derive(Debug, Clone)]
pub struct Machine {
    state: State,
    rules: Option<Rules>,
    /// Bumped at every launch.
    generation: u64,
    /// Consecutive restarts since the last healthy run (the backoff exponent).
    failures: u32,
    /// Restarts after a backoff, for `Status`.
    restarts: u32,
    started_at: Option<Instant>,
    last_exit: Option<String>,
    health: Option<Health>,
    /// Whether the service should run: false after a stop, a kill, a rollback decision or
    /// an end the restart policy does not restart.
    want_running: bool,
}

impl Default for Machine {
    fn default() -> Self {
        Machine::new()
    }
}

impl Machine {
    /// A service that has never been launched.
    pub fn new() -> Machine {
        Machine {
            state: State::Stopped,
            rules: None,
            generation: 0,
            failures: 0,
            restarts: 0,
            started_at: None,
            last_exit: None,
            health: None,
            want_running: true,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn generation(&self) -> u64 {
        self.generation
    }
    pub fn restarts(&self) -> u32 {
        self.restarts
    }
    pub fn last_exit(&self) -> Option<&str> {
        self.last_exit.as_deref()
    }
    pub fn health(&self) -> Option<&Health> {
        self.health.as_ref()
    }
    pub fn want_running(&self) -> bool {
        self.want_running
    }

    /// The restart delay after `failures` consecutive restarts: the base doubled per
    /// failure, capped at the maximum (a base of 0 counts as 1 ms).
    pub fn backoff(rules: &Rules, failures: u32) -> Duration {
        let base = rules.restart_delay_ms.max(1);
        let exp = base.saturating_mul(1u64 << failures.min(MAX_DOUBLINGS));
        Duration::from_millis(exp.min(rules.restart_delay_max_ms))
    }

    /// Applies `event`, which happened at `now`, and returns what to do.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        match event {
            Event::Launched {
                rules,
                window,
                restart,
            } => self.launched(rules, window, restart, now),
            Event::RestartFailed { reason } => {
                self.state = State::Failed;
                self.last_exit = Some(format!("restart failed: {reason}"));
                vec![Action::Announce(State::Failed)]
            }
            Event::Ready { generation } => self.ready(generation),
            Event::Exited { generation, exit } => self.exited(generation, exit, now),
            Event::StopRequested => {
                self.want_running = false;
                if !self.state.has_process() {
                    if self.state == State::Backoff {
                        self.state = State::Stopped;
                    }
                    return Vec::new();
                }
                self.state = State::Stopping;
                let timeout = self.rules.map_or(10, |r| r.stop_timeout_s);
                vec![Action::Terminate {
                    kill_at: now + Duration::from_secs(timeout.into()),
                }]
            }
            Event::KillRequested => {
                self.want_running = false;
                Vec::new()
            }
            Event::RestartDue { generation } => {
                if generation == self.generation
                    && self.want_running
                    && self.state == State::Backoff
                {
                    self.restarts += 1;
                    vec![Action::Launch]
                } else {
                    Vec::new()
                }
            }
            Event::HealthDeadline { generation } => self.health_deadline(generation),
        }
    }

    fn launched(
        &mut self,
        rules: Rules,
        window: Option<Health>,
        restart: bool,
        now: Instant,
    ) -> Vec<Action> {
        self.generation += 1;
        self.rules = Some(rules);
        self.started_at = Some(now);
        if restart && !self.want_running {
            // Stopped while its restart was being launched: the stop wins, the new run
            // ends at once (its end finds the service unwanted: `stopped`).
            self.state = State::Stopping;
            return vec![Action::Terminate {
                kill_at: now + Duration::from_secs(rules.stop_timeout_s.into()),
            }];
        }
        self.want_running = true;
        if window.is_some() {
            self.health = window;
        }
        self.state = if rules.needs_ready {
            State::Starting
        } else {
            State::Running
        };
        let mut out = vec![Action::Announce(self.state)];
        if let Some(h) = &self.health {
            out.push(Action::HealthDeadlineAt {
                at: h.deadline,
                generation: self.generation,
            });
        }
        out
    }

    fn ready(&mut self, generation: u64) -> Vec<Action> {
        if generation != self.generation || self.state != State::Starting {
            return Vec::new();
        }
        self.state = State::Ready;
        self.failures = 0;
        let mut out = Vec::new();
        if let Some(h) = self.health.take() {
            out.push(Action::Accepted {
                from_version: h.from_version,
                to_version: h.to_version,
                why: Passed::Ready,
            });
        }
        out.push(Action::Announce(State::Ready));
        out
    }

    fn exited(&mut self, generation: u64, exit: Exit, now: Instant) -> Vec<Action> {
        let Some(rules) = self.rules.filter(|_| generation == self.generation) else {
            return Vec::new();
        };
        let desc = exit.describe();
        let success = exit.success();
        let ran = self
            .started_at
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default();
        self.last_exit = Some(desc.clone());
        let mut out = vec![Action::Ended {
            desc: desc.clone(),
            success,
            ran,
        }];
        // A window without READY closes at its deadline: a later end is no longer its
        // crash (even if the deadline's own event has not been handled yet).
        if self
            .health
            .as_ref()
            .is_some_and(|h| !h.needs_ready && now >= h.deadline)
        {
            out.extend(self.close_window());
        }
        if !self.want_running {
            self.state = State::Stopped;
            out.push(Action::Announce(State::Stopped));
            return out;
        }
        let failed_window = self.health.take_if(|h| {
            if !success {
                h.crashes += 1;
            }
            h.crashes >= h.max_crashes
        });
        if let Some(h) = failed_window {
            // Not restarted: the rollback starts the previous version.
            self.state = State::Stopped;
            self.want_running = false;
            out.push(Action::Announce(State::Stopped));
            out.push(Action::RollBack {
                reason: format!(
                    "{} crash(es) of {} within the health window (last: {desc})",
                    h.crashes, h.to_version
                ),
                from_version: h.from_version,
                to_version: h.to_version,
            });
            return out;
        }
        if ran >= HEALTHY_RUN {
            self.failures = 0;
        }
        let again = match rules.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        };
        if again {
            let delay = Machine::backoff(&rules, self.failures);
            self.failures = self.failures.saturating_add(1);
            self.state = State::Backoff;
            out.push(Action::Announce(State::Backoff));
            out.push(Action::RestartAt {
                at: now + delay,
                generation: self.generation,
            });
        } else {
            self.state = if success {
                State::Stopped
            } else {
                State::Failed
            };
            self.want_running = false;
            out.push(Action::Announce(self.state));
        }
        out
    }

    /// Closes the open window of a `ready = "started"` update: it passed.
    fn close_window(&mut self) -> Option<Action> {
        let h = self.health.take()?;
        Some(Action::Accepted {
            from_version: h.from_version,
            to_version: h.to_version,
            why: Passed::Window,
        })
    }

    fn health_deadline(&mut self, generation: u64) -> Vec<Action> {
        if generation != self.generation {
            return Vec::new();
        }
        if self.health.as_ref().is_some_and(|h| !h.needs_ready) {
            return self.close_window().into_iter().collect();
        }
        if self.state != State::Starting {
            return Vec::new();
        }
        let Some(h) = self.health.take() else {
            return Vec::new();
        };
        // The run is stopped by the rollback, not restarted.
        self.want_running = false;
        vec![Action::RollBack {
            reason: format!("no READY=1 within {} s of the update", h.timeout_s),
            from_version: h.from_version,
            to_version: h.to_version,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use RestartPolicy::{Always, Never, OnFailure};

    /// Times in the tables are milliseconds after `T0`.
    struct Clock(Instant);

    impl Clock {
        fn new() -> Clock {
            Clock(Instant::now())
        }
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    fn rules(restart: RestartPolicy, needs_ready: bool) -> Rules {
        Rules {
            restart,
            restart_delay_ms: 100,
            restart_delay_max_ms: 400,
            needs_ready,
            stop_timeout_s: 5,
        }
    }

    fn launched(r: Rules) -> Event {
        Event::Launched {
            rules: r,
            window: None,
            restart: false,
        }
    }

    fn relaunched(r: Rules) -> Event {
        Event::Launched {
            rules: r,
            window: None,
            restart: true,
        }
    }

    fn exited(generation: u64, exit: Exit) -> Event {
        Event::Exited { generation, exit }
    }

    fn ended(exit: Exit, ran_ms: u64) -> Action {
        Ended {
            desc: exit.describe(),
            success: exit.success(),
            ran: Duration::from_millis(ran_ms),
        }
    }

    /// Feeds `steps` (time in ms, event, expected actions) and checks each step's actions.
    fn run(m: &mut Machine, c: &Clock, steps: Vec<(u64, Event, Vec<Action>)>) {
        for (i, (ms, event, want)) in steps.into_iter().enumerate() {
            let shown = format!("{event:?}");
            let got = m.handle(event, c.at(ms));
            assert_eq!(got, want, "step {i} at {ms} ms: {shown}");
        }
    }

    const CRASH: Exit = Exit::Code(1);
    const CLEAN: Exit = Exit::Code(0);

    #[test]
    fn backoff_doubles_per_failure_and_is_capped() {
        let r = rules(OnFailure, false);
        for (failures, ms) in [(0, 100), (1, 200), (2, 400), (3, 400), (20, 400), (63, 400)] {
            assert_eq!(
                Machine::backoff(&r, failures),
                Duration::from_millis(ms),
                "{failures} failures"
            );
        }
        // A huge base saturates instead of overflowing; the maximum still applies.
        let big = Rules {
            restart_delay_ms: u64::MAX / 2,
            restart_delay_max_ms: 60_000,
            ..r
        };
        assert_eq!(Machine::backoff(&big, 30), Duration::from_secs(60));
        // Base 0 counts as 1 ms; the doubling stops after 20 steps.
        let tiny = Rules {
            restart_delay_ms: 0,
            restart_delay_max_ms: u64::MAX,
            ..r
        };
        assert_eq!(Machine::backoff(&tiny, 0), Duration::from_millis(1));
        assert_eq!(Machine::backoff(&tiny, 25), Duration::from_millis(1 << 20));
    }

    #[test]
    fn crashes_restart_with_growing_delay_up_to_the_maximum() {
        let c = Clock::new();
        let mut m = Machine::new();
        let r = rules(OnFailure, false);
        run(
            &mut m,
            &c,
            vec![
                (0, launched(r), vec![Announce(State::Running)]),
                (
                    1_000,
                    exited(1, CRASH),
                    vec![
                        ended(CRASH, 1_000),
                        Announce(State::Backoff),
                        RestartAt {
                            at: c.at(1_100),
                            generation: 1,
                        },
                    ],
                ),
                // Early or stale timers do nothing.
                (1_050, Event::RestartDue { generation: 0 }, vec![]),
                (1_100, Event::RestartDue { generation: 1 }, vec![Launch]),
                (1_150, relaunched(r), vec![Announce(State::Running)]),
                (
                    1_250,
                    exited(2, Exit::Signal(11)),
                    vec![
                        ended(Exit::Signal(11), 100),
                        Announce(State::Backoff),
                        RestartAt {
                            at: c.at(1_450),
                            generation: 2,
                        },
                    ],
                ),
                (1_450, Event::RestartDue { generation: 2 }, vec![Launch]),
                (1_500, relaunched(r), vec![Announce(State::Running)]),
                (
                    1_600,
                    exited(3, CRASH),
                    vec![
                        ended(CRASH, 100),
                        Announce(State::Backoff),
                        RestartAt {
                            at: c.at(2_000),
                            generation: 3,
                        },
                    ],
                ),
                (2_000, Event::RestartDue { generation: 3 }, vec![Launch]),
                (2_000, relaunched(r), vec![Announce(State::Running)]),
                (
                    2_100,
                    exited(4, CRASH),
                    vec![
                        ended(CRASH, 100),
                        Announce(State::Backoff),
                        // Capped at restart-delay-max-ms.
                        RestartAt {
                            at: c.at(2_500),
                            generation: 4,
                        },
                    ],
                ),
            ],
        );
        assert_eq!(m.restarts(), 3);
        assert_eq!(m.state(), State::Backoff);
        assert_eq!(m.last_exit(), Some("exited with status 1"));
    }

    /// Crashes until the next delay would be the maximum (400 ms), then one run of `ran_ms`
    /// and a crash: returns the delay asked for after it.
    fn delay_after_run_of(ran_ms: u64, needs_ready: bool, ready: bool) -> Duration {
        let c = Clock::new();
        let mut m = Machine::new();
        let r = rules(OnFailure, needs_ready);
        let mut t = 0;
        for _ in 0..3 {
            m.handle(launched(r), c.at(t));
            t += 10;
            m.handle(exited(m.generation(), CRASH), c.at(t));
            t += 1_000;
            assert_eq!(
                m.handle(
                    Event::RestartDue {
                        generation: m.generation()
                    },
                    c.at(t)
                ),
                vec![Launch]
            );
        }
        m.handle(relaunched(r), c.at(t));
        if ready {
            m.handle(
                Event::Ready {
                    generation: m.generation(),
                },
                c.at(t + 1),
            );
        }
        let actions = m.handle(exited(m.generation(), CRASH), c.at(t + ran_ms));
        let at = actions
            .iter()
            .find_map(|a| match a {
                RestartAt { at, .. } => Some(*at),
                _ => None,
            })
            .expect("restarted");
        at - c.at(t + ran_ms)
    }

    #[test]
    fn a_healthy_run_resets_the_delay() {
        let ms = Duration::from_millis;
        // 30 s of running resets it; 1 ms less does not.
        assert_eq!(delay_after_run_of(30_000, false, false), ms(100));
        assert_eq!(delay_after_run_of(29_999, false, false), ms(400));
        // READY=1 resets it at once.
        assert_eq!(delay_after_run_of(50, true, true), ms(100));
        assert_eq!(delay_after_run_of(50, true, false), ms(400));
    }

    #[test]
    fn the_restart_policy_decides_after_each_kind_of_end() {
        use State::{Backoff, Failed, Stopped};
        let table = [
            (Always, CLEAN, Backoff),
            (Always, CRASH, Backoff),
            (OnFailure, CLEAN, Stopped),
            (OnFailure, CRASH, Backoff),
            (OnFailure, Exit::Signal(9), Backoff),
            (OnFailure, Exit::Ended, Backoff),
            (OnFailure, Exit::Lost, Backoff),
            (Never, CLEAN, Stopped),
            (Never, CRASH, Failed),
            (Never, Exit::Signal(6), Failed),
        ];
        for (policy, exit, state) in table {
            let c = Clock::new();
            let mut m = Machine::new();
            m.handle(launched(rules(policy, false)), c.at(0));
            let got = m.handle(exited(1, exit), c.at(10));
            let mut want = vec![ended(exit, 10), Announce(state)];
            if state == Backoff {
                want.push(RestartAt {
                    at: c.at(110),
                    generation: 1,
                });
            }
            assert_eq!(got, want, "{policy:?} after {exit:?}");
            assert_eq!(m.state(), state);
            assert_eq!(
                m.want_running(),
                state == Backoff,
                "{policy:?} after {exit:?}"
            );
            // A restart timer can only act when one was asked for.
            let again = m.handle(Event::RestartDue { generation: 1 }, c.at(110));
            assert_eq!(
                again.is_empty(),
                state != Backoff,
                "{policy:?} after {exit:?}"
            );
        }
    }

    #[test]
    fn exits_are_described_and_only_status_0_is_a_success() {
        let table = [
            (Exit::Code(0), "exited with status 0", true),
            (Exit::Code(3), "exited with status 3", false),
            (Exit::Signal(9), "killed by signal 9", false),
            (Exit::Ended, "ended", false),
            (Exit::Lost, "lost", false),
        ];
        for (exit, desc, ok) in table {
            assert_eq!(exit.describe(), desc);
            assert_eq!(exit.success(), ok, "{exit:?}");
        }
        use std::os::unix::process::ExitStatusExt;
        let st = std::process::ExitStatus::from_raw;
        assert_eq!(Exit::of(Some(st(0))), Exit::Code(0));
        assert_eq!(Exit::of(Some(st(3 << 8))), Exit::Code(3));
        assert_eq!(Exit::of(Some(st(15))), Exit::Signal(15));
        assert_eq!(Exit::of(None), Exit::Lost);
    }

    #[test]
    fn a_stop_request_never_restarts() {
        let r = Rules {
            restart: Always,
            ..rules(Always, false)
        };
        // Stop while running: SIGTERM, SIGKILL after stop-timeout, the end is final.
        let c = Clock::new();
        let mut m = Machine::new();
        run(
            &mut m,
            &c,
            vec![
                (0, launched(r), vec![Announce(State::Running)]),
                (
                    1_000,
                    Event::StopRequested,
                    vec![Terminate {
                        kill_at: c.at(6_000),
                    }],
                ),
                (
                    1_200,
                    exited(1, Exit::Signal(15)),
                    vec![ended(Exit::Signal(15), 1_200), Announce(State::Stopped)],
                ),
                (5_000, Event::RestartDue { generation: 1 }, vec![]),
                // Stopping a stopped service does nothing.
                (5_000, Event::StopRequested, vec![]),
            ],
        );
        assert_eq!(
            (m.state(), m.want_running(), m.restarts()),
            (State::Stopped, false, 0)
        );

        // Stop during the backoff: stopped at once, the pending timer does nothing.
        let mut m = Machine::new();
        run(
            &mut m,
            &c,
            vec![
                (0, launched(r), vec![Announce(State::Running)]),
                (
                    10,
                    exited(1, CRASH),
                    vec![
                        ended(CRASH, 10),
                        Announce(State::Backoff),
                        RestartAt {
                            at: c.at(110),
                            generation: 1,
                        },
                    ],
                ),
                (50, Event::StopRequested, vec![]),
                (110, Event::RestartDue { generation: 1 }, vec![]),
            ],
        );
        assert_eq!(m.state(), State::Stopped);

        // Kill from outside: the end (a signal) is neither a crash nor restarted.
        let mut m = Machine::new();
        run(
            &mut m,
            &c,
            vec![
                (0, launched(r), vec![Announce(State::Running)]),
                (10, Event::KillRequested, vec![]),
                (
                    20,
                    exited(1, Exit::Signal(9)),
                    vec![ended(Exit::Signal(9), 20), Announce(State::Stopped)],
                ),
                (200, Event::RestartDue { generation: 1 }, vec![]),
            ],
        );
        assert_eq!(m.state(), State::Stopped);

        // Stop while the restart is being launched: the new run is ended at once.
        let mut m = Machine::new();
        run(
            &mut m,
            &c,
            vec![
                (0, launched(r), vec![Announce(State::Running)]),
                (
                    10,
                    exited(1, CRASH),
                    vec![
                        ended(CRASH, 10),
                        Announce(State::Backoff),
                        RestartAt {
                            at: c.at(110),
                            generation: 1,
                        },
                    ],
                ),
                (110, Event::RestartDue { generation: 1 }, vec![Launch]),
                (120, Event::StopRequested, vec![]),
                (
                    150,
                    relaunched(r),
                    vec![Terminate {
                        kill_at: c.at(5_150),
                    }],
                ),
                (
                    160,
                    exited(2, Exit::Signal(15)),
                    vec![ended(Exit::Signal(15), 10), Announce(State::Stopped)],
                ),
            ],
        );
        assert!(!m.want_running());
        // A start after the stop wants it running again.
        assert_eq!(
            m.handle(launched(r), c.at(300)),
            vec![Announce(State::Running)]
        );
        assert!(m.want_running());
        assert_eq!(m.generation(), 3);

        // A restart launched while still wanted runs normally.
        let mut m = Machine::new();
        m.handle(launched(r), c.at(0));
        m.handle(exited(1, CRASH), c.at(10));
        m.handle(Event::RestartDue { generation: 1 }, c.at(110));
        assert_eq!(
            m.handle(relaunched(r), c.at(120)),
            vec![Announce(State::Running)]
        );
    }

    #[test]
    fn events_of_an_older_launch_are_ignored() {
        let c = Clock::new();
        let mut m = Machine::new();
        let r = rules(OnFailure, true);
        m.handle(launched(r), c.at(0));
        m.handle(launched(r), c.at(10));
        let before = format!("{m:?}");
        for e in [
            exited(1, CRASH),
            Event::Ready { generation: 1 },
            Event::RestartDue { generation: 1 },
            Event::HealthDeadline { generation: 1 },
        ] {
            assert_eq!(m.handle(e.clone(), c.at(20)), vec![], "{e:?}");
        }
        assert_eq!(format!("{m:?}"), before);
        // A machine that never launched ignores every run event.
        let mut fresh = Machine::new();
        for e in [
            exited(0, CRASH),
            Event::Ready { generation: 0 },
            Event::RestartDue { generation: 0 },
            Event::HealthDeadline { generation: 0 },
        ] {
            assert_eq!(fresh.handle(e.clone(), c.at(20)), vec![], "{e:?}");
        }
        assert_eq!(fresh.state(), State::Stopped);
    }

    #[test]
    fn a_failed_restart_is_failed_with_the_reason() {
        let c = Clock::new();
        let mut m = Machine::new();
        m.handle(launched(rules(OnFailure, false)), c.at(0));
        m.handle(exited(1, CRASH), c.at(10));
        assert_eq!(
            m.handle(Event::RestartDue { generation: 1 }, c.at(110)),
            vec![Launch]
        );
        assert_eq!(
            m.handle(
                Event::RestartFailed {
                    reason: "policy refused".into()
                },
                c.at(120)
            ),
            vec![Announce(State::Failed)]
        );
        assert_eq!(m.state(), State::Failed);
        assert_eq!(m.last_exit(), Some("restart failed: policy refused"));
        assert_eq!(m.restarts(), 1);
    }

    fn window(c: &Clock, max_crashes: u32, needs_ready: bool) -> Health {
        Health::open(
            "1.0.0".into(),
            "2.0.0".into(),
            max_crashes,
            3,
            needs_ready,
            c.at(0),
        )
    }

    fn update(c: &Clock, r: Rules, max_crashes: u32) -> Event {
        Event::Launched {
            rules: r,
            window: Some(window(c, max_crashes, r.needs_ready)),
            restart: false,
        }
    }

    #[test]
    fn crashes_in_the_health_window_roll_back() {
        let c = Clock::new();
        let mut m = Machine::new();
        let r = rules(OnFailure, false);
        run(
            &mut m,
            &c,
            vec![
                (
                    0,
                    update(&c, r, 2),
                    vec![
                        Announce(State::Running),
                        HealthDeadlineAt {
                            at: c.at(3_000),
                            generation: 1,
                        },
                    ],
                ),
                (
                    50,
                    exited(1, Exit::Code(3)),
                    vec![
                        ended(Exit::Code(3), 50),
                        Announce(State::Backoff),
                        RestartAt {
                            at: c.at(150),
                            generation: 1,
                        },
                    ],
                ),
                (150, Event::RestartDue { generation: 1 }, vec![Launch]),
                // The relaunch keeps the window, its count and its deadline.
                (
                    160,
                    relaunched(r),
                    vec![
                        Announce(State::Running),
                        HealthDeadlineAt {
                            at: c.at(3_000),
                            generation: 2,
                        },
                    ],
                ),
                (
                    200,
                    exited(2, Exit::Code(3)),
                    vec![
                        ended(Exit::Code(3), 40),
                        Announce(State::Stopped),
                        RollBack {
                            from_version: "1.0.0".into(),
                            to_version: "2.0.0".into(),
                            reason: "2 crash(es) of 2.0.0 within the health window \
                                     (last: exited with status 3)"
                                .into(),
                        },
                    ],
                ),
            ],
        );
        // Closed, not wanted: nothing restarts the failed version; the rollback's stop
        // finds no process.
        assert!(m.health().is_none());
        assert!(!m.want_running());
        assert_eq!(m.handle(Event::StopRequested, c.at(210)), vec![]);
        assert_eq!(m.state(), State::Stopped);
        // The previous version then starts without a window.
        assert_eq!(
            m.handle(launched(r), c.at(300)),
            vec![Announce(State::Running)]
        );
        m.handle(exited(3, CRASH), c.at(400));
        assert_eq!(m.state(), State::Backoff);
    }

    #[test]
    fn clean_ends_and_stops_are_not_crashes_of_the_window() {
        let c = Clock::new();
        let mut m = Machine::new();
        let r = rules(Always, false);
        m.handle(update(&c, r, 1), c.at(0));
        // A clean exit restarts (always) without counting.
        let a = m.handle(exited(1, CLEAN), c.at(10));
        assert!(matches!(a.last(), Some(RestartAt { .. })), "{a:?}");
        assert_eq!(m.health().map(|h| h.crashes), Some(0));
        m.handle(Event::RestartDue { generation: 1 }, c.at(110));
        m.handle(relaunched(r), c.at(110));
        // The end of a stopped run is not counted either.
        m.handle(Event::StopRequested, c.at(120));
        let a = m.handle(exited(2, Exit::Signal(15)), c.at(130));
        assert_eq!(
            a,
            vec![ended(Exit::Signal(15), 20), Announce(State::Stopped)]
        );
        assert_eq!(m.health().map(|h| h.crashes), Some(0));
    }

    #[test]
    fn health_crashes_0_means_the_first_crash_rolls_back() {
        let c = Clock::new();
        let h = window(&c, 0, false);
        assert_eq!(h.max_crashes, 1);
        assert_eq!(h.deadline, c.at(3_000));
        let mut m = Machine::new();
        m.handle(update(&c, rules(OnFailure, false), 0), c.at(0));
        let a = m.handle(exited(1, Exit::Signal(11)), c.at(10));
        assert!(matches!(a.last(), Some(RollBack { .. })), "{a:?}");
    }

    #[test]
    fn a_notify_update_without_ready_rolls_back_at_the_deadline() {
        let c = Clock::new();
        let mut m = Machine::new();
        let r = rules(OnFailure, true);
        run(
            &mut m,
            &c,
            vec![
                (
                    0,
                    update(&c, r, 3),
                    vec![
                        Announce(State::Starting),
                        HealthDeadlineAt {
                            at: c.at(3_000),
                            generation: 1,
                        },
                    ],
                ),
                (
                    3_000,
                    Event::HealthDeadline { generation: 1 },
                    vec![RollBack {
                        from_version: "1.0.0".into(),
                        to_version: "2.0.0".into(),
                        reason: "no READY=1 within 3 s of the update".into(),
                    }],
                ),
                // The rollback stops the run; its end is not restarted.
                (
                    3_001,
                    Event::StopRequested,
                    vec![Terminate {
                        kill_at: c.at(8_001),
                    }],
                ),
                (
                    3_100,
                    exited(1, Exit::Signal(15)),
                    vec![ended(Exit::Signal(15), 3_100), Announce(State::Stopped)],
                ),
                // A late READY=1 or a second deadline changes nothing.
                (3_200, Event::Ready { generation: 1 }, vec![]),
                (3_200, Event::HealthDeadline { generation: 1 }, vec![]),
            ],
        );
    }

    #[test]
    fn ready_closes_a_notify_window() {
        let c = Clock::new();
        let mut m = Machine::new();
        let r = rules(OnFailure, true);
        m.handle(update(&c, r, 1), c.at(0));
        run(
            &mut m,
            &c,
            vec![
                (
                    500,
                    Event::Ready { generation: 1 },
                    vec![
                        Accepted {
                            from_version: "1.0.0".into(),
                            to_version: "2.0.0".into(),
                            why: Passed::Ready,
                        },
                        Announce(State::Ready),
                    ],
                ),
                // READY=1 again is not news.
                (600, Event::Ready { generation: 1 }, vec![]),
                (3_000, Event::HealthDeadline { generation: 1 }, vec![]),
                // A crash after acceptance restarts, no rollback.
                (
                    4_000,
                    exited(1, CRASH),
                    vec![
                        ended(CRASH, 4_000),
                        Announce(State::Backoff),
                        RestartAt {
                            at: c.at(4_100),
                            generation: 1,
                        },
                    ],
                ),
            ],
        );
        assert!(m.health().is_none());
    }

    #[test]
    fn a_notify_deadline_passed_in_backoff_fires_at_the_next_launch() {
        let c = Clock::new();
        let mut m = Machine::new();
        let r = Rules {
            restart_delay_ms: 5_000,
            restart_delay_max_ms: 5_000,
            ..rules(OnFailure, true)
        };
        m.handle(update(&c, r, 3), c.at(0));
        m.handle(exited(1, CRASH), c.at(100));
        // Not starting (backing off): the deadline waits for the next run.
        assert_eq!(
            m.handle(Event::HealthDeadline { generation: 1 }, c.at(3_000)),
            vec![]
        );
        assert_eq!(
            m.handle(Event::RestartDue { generation: 1 }, c.at(5_100)),
            vec![Launch]
        );
        // The same absolute deadline, already past, for the new generation.
        assert_eq!(
            m.handle(relaunched(r), c.at(5_200)),
            vec![
                Announce(State::Starting),
                HealthDeadlineAt {
                    at: c.at(3_000),
                    generation: 2,
                }
            ]
        );
        let a = m.handle(Event::HealthDeadline { generation: 2 }, c.at(5_200));
        assert!(matches!(a.as_slice(), [RollBack { .. }]), "{a:?}");
    }

    #[test]
    fn a_started_window_closes_at_its_deadline() {
        let c = Clock::new();
        let mut m = Machine::new();
        let r = rules(OnFailure, false);
        let accepted = || Accepted {
            from_version: "1.0.0".into(),
            to_version: "2.0.0".into(),
            why: Passed::Window,
        };
        run(
            &mut m,
            &c,
            vec![
                (
                    0,
                    update(&c, r, 2),
                    vec![
                        Announce(State::Running),
                        HealthDeadlineAt {
                            at: c.at(3_000),
                            generation: 1,
                        },
                    ],
                ),
                (
                    1_000,
                    exited(1, CRASH),
                    vec![
                        ended(CRASH, 1_000),
                        Announce(State::Backoff),
                        RestartAt {
                            at: c.at(1_100),
                            generation: 1,
                        },
                    ],
                ),
                (1_100, Event::RestartDue { generation: 1 }, vec![Launch]),
                (
                    1_100,
                    relaunched(r),
                    vec![
                        Announce(State::Running),
                        HealthDeadlineAt {
                            at: c.at(3_000),
                            generation: 2,
                        },
                    ],
                ),
                // The first launch's timer is stale; the current one closes the window.
                (3_000, Event::HealthDeadline { generation: 1 }, vec![]),
                (
                    3_000,
                    Event::HealthDeadline { generation: 2 },
                    vec![accepted()],
                ),
                (3_000, Event::HealthDeadline { generation: 2 }, vec![]),
                // The second crash comes after the window: restarted, not rolled back.
                (
                    3_500,
                    exited(2, CRASH),
                    vec![
                        ended(CRASH, 2_400),
                        Announce(State::Backoff),
                        RestartAt {
                            at: c.at(3_700),
                            generation: 2,
                        },
                    ],
                ),
            ],
        );
        assert!(m.health().is_none());

        // An end at the deadline, before the deadline's event, closes it as well.
        let mut m = Machine::new();
        m.handle(update(&c, r, 1), c.at(0));
        assert_eq!(
            m.handle(exited(1, CRASH), c.at(3_000)),
            vec![
                ended(CRASH, 3_000),
                accepted(),
                Announce(State::Backoff),
                RestartAt {
                    at: c.at(3_100),
                    generation: 1,
                },
            ]
        );
        // 1 ms earlier it is the window's crash.
        let mut m = Machine::new();
        m.handle(update(&c, r, 1), c.at(0));
        let a = m.handle(exited(1, CRASH), c.at(2_999));
        assert!(matches!(a.last(), Some(RollBack { .. })), "{a:?}");
    }

    #[test]
    fn a_notify_window_still_counts_crashes_until_ready() {
        // Without READY=1 the window stays open past the deadline for crashes too: the
        // deadline's rollback or the crash count decides, never acceptance.
        let c = Clock::new();
        let mut m = Machine::new();
        m.handle(update(&c, rules(OnFailure, true), 1), c.at(0));
        let a = m.handle(exited(1, CRASH), c.at(4_000));
        assert!(matches!(a.last(), Some(RollBack { .. })), "{a:?}");
    }

    #[test]
    fn a_new_update_replaces_the_window() {
        let c = Clock::new();
        let mut m = Machine::new();
        let r = rules(OnFailure, false);
        m.handle(update(&c, r, 2), c.at(0));
        m.handle(exited(1, CRASH), c.at(10));
        assert_eq!(m.health().map(|h| h.crashes), Some(1));
        m.handle(Event::StopRequested, c.at(20));
        let next = Health::open("2.0.0".into(), "3.0.0".into(), 2, 3, false, c.at(30));
        m.handle(
            Event::Launched {
                rules: r,
                window: Some(next.clone()),
                restart: false,
            },
            c.at(30),
        );
        assert_eq!(m.health(), Some(&next));
    }
}

//! A coarse timer wheel per core: one task wakes the actors whose alarm is due.
//!
//! A session needs a timer for pings, idle timeouts, ack requests and giving back buffers,
//! and its due time moves with every byte it reads. Arming a reactor timer per session per
//! wake-up would put one timer insert and remove on every message; here an [`Alarm`] is
//! re-armed only when its due tick moves earlier, so a busy session touches the wheel about
//! once per due time and an idle one not at all. Due times are rounded up to whole ticks:
//! an alarm never fires early, and at most one tick late.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::poll_fn;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// The core's wheel; cheap to clone. Run [`Wheel::drive`] once, as a task of the same core.
#[derive(Clone)]
pub struct Wheel(Rc<RefCell<Inner>>);

struct Inner {
    origin: Instant,
    tick: Duration,
    /// Alarms by the tick they are due at. An alarm re-armed earlier leaves a stale entry
    /// behind, skipped when its tick comes; a dropped alarm leaves a dead `Weak`.
    due: BTreeMap<u64, Vec<Weak<AlarmState>>>,
    /// The driver, waiting for the first due tick; woken when an earlier one is armed.
    driver: Option<Waker>,
}

struct AlarmState {
    armed_tick: Cell<Option<u64>>,
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// One actor's alarm on its core's wheel.
pub struct Alarm {
    wheel: Wheel,
    state: Rc<AlarmState>,
}

impl Wheel {
    pub fn new(tick: Duration) -> Wheel {
        assert!(!tick.is_zero());
        Wheel(Rc::new(RefCell::new(Inner { origin: Instant::now(), tick, due: BTreeMap::new(), driver: None })))
    }

    pub fn alarm(&self) -> Alarm {
        let state = Rc::new(AlarmState { armed_tick: Cell::new(None), fired: Cell::new(false), waker: RefCell::new(None) });
        Alarm { wheel: self.clone(), state }
    }

    /// Fires alarms as their ticks come; never returns. Sleeps while no alarm is armed.
    pub async fn drive(self) {
        loop {
            let first = self.0.borrow().due.keys().next().copied();
            let Some(tick) = first else {
                self.armed_earlier().await;
                continue;
            };
            let at = self.instant_of(tick);
            let now = Instant::now();
            if at > now {
                let sleep = async { glommio::timer::sleep(at - now).await };
                futures_lite::future::or(sleep, self.armed_earlier()).await;
                continue;
            }
            let fired = self.0.borrow_mut().due.remove(&tick).unwrap_or_default();
            for state in fired.iter().filter_map(Weak::upgrade) {
                if state.armed_tick.get() == Some(tick) {
                    state.armed_tick.set(None);
                    state.fired.set(true);
                    if let Some(waker) = state.waker.borrow_mut().take() {
                        waker.wake();
                    }
                }
            }
        }
    }

    /// Resolves once an alarm is armed for a tick earlier than any before it.
    async fn armed_earlier(&self) {
        let mut registered = false;
        poll_fn(|cx| {
            let mut inner = self.0.borrow_mut();
            if registered && inner.driver.is_none() {
                return Poll::Ready(());
            }
            registered = true;
            inner.driver = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn instant_of(&self, tick: u64) -> Instant {
        let inner = self.0.borrow();
        inner.origin + inner.tick * u32::try_from(tick).unwrap_or(u32::MAX)
    }

    /// The first tick at or after `at`.
    fn tick_of(&self, at: Instant) -> u64 {
        let inner = self.0.borrow();
        let since = at.saturating_duration_since(inner.origin);
        since.as_nanos().div_ceil(inner.tick.as_nanos()).try_into().unwrap_or(u64::MAX)
    }
}

impl Alarm {
    /// Arms the alarm for `at`, unless it is armed for then or earlier already: an alarm
    /// that fires early is checked and re-armed by its owner, so nothing is lost by keeping
    /// the earlier time, and a due time that only moves later costs nothing.
    pub fn arm_at(&self, at: Instant) {
        let tick = self.wheel.tick_of(at);
        if self.state.armed_tick.get().is_some_and(|armed| armed <= tick) {
            return;
        }
        self.state.armed_tick.set(Some(tick));
        let mut inner = self.wheel.0.borrow_mut();
        let earliest = inner.due.keys().next().is_none_or(|&first| tick < first);
        inner.due.entry(tick).or_default().push(Rc::downgrade(&self.state));
        if earliest {
            if let Some(driver) = inner.driver.take() {
                driver.wake();
            }
        }
    }

    /// Resolves when the armed time has come (at once if it came since the last wait).
    pub async fn fired(&self) {
        poll_fn(|cx| {
            if self.state.fired.replace(false) {
                return Poll::Ready(());
            }
            let mut waker = self.state.waker.borrow_mut();
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_executor(f: impl std::future::Future<Output = ()> + 'static) {
        let ex = glommio::LocalExecutorBuilder::default().make().expect("an executor");
        ex.run(f);
    }

    #[test]
    fn an_alarm_fires_not_before_its_time_and_within_a_tick() {
        on_executor(async {
            let wheel = Wheel::new(Duration::from_millis(20));
            glommio::spawn_local(wheel.clone().drive()).detach();
            let alarm = wheel.alarm();
            let start = Instant::now();
            alarm.arm_at(start + Duration::from_millis(50));
            alarm.fired().await;
            let waited = start.elapsed();
            assert!(waited >= Duration::from_millis(50), "fired early: {waited:?}");
            assert!(waited < Duration::from_millis(50 + 20 + 30), "fired late: {waited:?}");
        });
    }

    #[test]
    fn arming_later_keeps_the_earlier_time_and_arming_earlier_moves_it() {
        on_executor(async {
            let wheel = Wheel::new(Duration::from_millis(10));
            glommio::spawn_local(wheel.clone().drive()).detach();
            let alarm = wheel.alarm();
            let start = Instant::now();
            alarm.arm_at(start + Duration::from_secs(60));
            alarm.arm_at(start + Duration::from_millis(30)); // earlier: the driver must wake for it
            alarm.arm_at(start + Duration::from_secs(30)); // later than armed: no change
            alarm.fired().await;
            assert!(start.elapsed() < Duration::from_secs(1));
            // The stale 60 s entry must not fire it again; a fresh arm does.
            alarm.arm_at(Instant::now() + Duration::from_millis(20));
            alarm.fired().await;
            assert!(start.elapsed() < Duration::from_secs(1));
        });
    }

    #[test]
    fn a_dropped_alarm_is_skipped_and_others_fire() {
        on_executor(async {
            let wheel = Wheel::new(Duration::from_millis(10));
            glommio::spawn_local(wheel.clone().drive()).detach();
            let at = Instant::now() + Duration::from_millis(20);
            let gone = wheel.alarm();
            gone.arm_at(at);
            drop(gone);
            let kept = wheel.alarm();
            kept.arm_at(at);
            kept.fired().await;
            assert!(wheel.0.borrow().due.is_empty());
        });
    }
}

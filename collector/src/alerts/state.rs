//! The life of one alert (a rule, a tenant and a group key): inactive,
//! pending while the condition has held for less than the rule's `for_s`,
//! firing, resolved. Pure: the evaluator feeds it what it saw and stores
//! what it returns.

/// An alert's stored state.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub state: State,
    /// When the condition started to hold (Unix seconds).
    pub since_s: u64,
    pub fired_at_s: u64,
    pub notified_at_s: u64,
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Inactive,
    Pending,
    Firing,
    Resolved,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Inactive => "inactive",
            State::Pending => "pending",
            State::Firing => "firing",
            State::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> State {
        match s {
            "pending" => State::Pending,
            "firing" => State::Firing,
            "resolved" => State::Resolved,
            _ => State::Inactive,
        }
    }
}

/// What a step asks the evaluator to announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    Firing,
    /// Still firing, `repeat_s` after the last notice.
    Repeat,
    Resolved,
}

/// The timing of a rule.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub for_s: u64,
    pub repeat_s: u64,
}

/// One evaluation: `value` is `Some` when the condition holds now.
/// Returns the new state (`None`: nothing changed, nothing to store) and
/// what to announce.
pub fn step(
    prev: Option<&Alert>,
    value: Option<f64>,
    now_s: u64,
    t: Timing,
) -> (Option<Alert>, Option<Notice>) {
    let state = prev.map_or(State::Inactive, |a| a.state);
    match (state, value) {
        (State::Inactive | State::Resolved, Some(v)) => {
            let a = Alert {
                state: State::Pending,
                since_s: now_s,
                fired_at_s: 0,
                notified_at_s: 0,
                value: v,
            };
            if t.for_s == 0 {
                fire(a, now_s)
            } else {
                (Some(a), None)
            }
        }
        (State::Pending, Some(v)) => {
            let prev = prev.expect("a pending alert has a state");
            let a = Alert {
                value: v,
                ..prev.clone()
            };
            if now_s.saturating_sub(prev.since_s) >= t.for_s {
                fire(a, now_s)
            } else {
                (Some(a), None)
            }
        }
        (State::Firing, Some(v)) => {
            let prev = prev.expect("a firing alert has a state");
            if t.repeat_s > 0 && now_s.saturating_sub(prev.notified_at_s) >= t.repeat_s {
                let a = Alert {
                    value: v,
                    notified_at_s: now_s,
                    ..prev.clone()
                };
                (Some(a), Some(Notice::Repeat))
            } else if v != prev.value {
                // The value is shown by the active-alerts view.
                let a = Alert {
                    value: v,
                    ..prev.clone()
                };
                (Some(a), None)
            } else {
                (None, None)
            }
        }
        (State::Pending, None) => {
            let prev = prev.expect("a pending alert has a state");
            let a = Alert {
                state: State::Inactive,
                ..prev.clone()
            };
            (Some(a), None)
        }
        (State::Firing, None) => {
            let prev = prev.expect("a firing alert has a state");
            let a = Alert {
                state: State::Resolved,
                notified_at_s: now_s,
                ..prev.clone()
            };
            (Some(a), Some(Notice::Resolved))
        }
        (State::Inactive | State::Resolved, None) => (None, None),
    }
}

fn fire(a: Alert, now_s: u64) -> (Option<Alert>, Option<Notice>) {
    let a = Alert {
        state: State::Firing,
        fired_at_s: now_s,
        notified_at_s: now_s,
        ..a
    };
    (Some(a), Some(Notice::Firing))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a sequence of observations (one per second from t=100) and
    /// returns the states and notices.
    fn run(t: Timing, seen: &[Option<f64>]) -> Vec<(State, Option<Notice>)> {
        let mut cur: Option<Alert> = None;
        let mut out = Vec::new();
        for (i, v) in seen.iter().enumerate() {
            let (next, notice) = step(cur.as_ref(), *v, 100 + i as u64, t);
            if let Some(n) = next {
                cur = Some(n);
            }
            out.push((cur.as_ref().map_or(State::Inactive, |a| a.state), notice));
        }
        out
    }

    #[test]
    fn pending_until_for_then_firing_once_then_resolved_once() {
        let t = Timing {
            for_s: 2,
            repeat_s: 0,
        };
        let got = run(t, &[Some(5.0), Some(6.0), Some(7.0), Some(7.0), None, None]);
        assert_eq!(
            got,
            vec![
                (State::Pending, None),
                (State::Pending, None),
                (State::Firing, Some(Notice::Firing)),
                (State::Firing, None),
                (State::Resolved, Some(Notice::Resolved)),
                (State::Resolved, None),
            ]
        );
    }

    #[test]
    fn a_short_blip_never_fires() {
        let t = Timing {
            for_s: 5,
            repeat_s: 0,
        };
        let got = run(t, &[Some(1.0), None, Some(1.0), None]);
        assert!(got.iter().all(|(_, n)| n.is_none()), "{got:?}");
        assert_eq!(got[1].0, State::Inactive);
    }

    #[test]
    fn repeats_while_firing_and_fires_again_after_resolving() {
        let t = Timing {
            for_s: 0,
            repeat_s: 2,
        };
        let got = run(
            t,
            &[Some(1.0), Some(1.0), Some(1.0), Some(1.0), None, Some(1.0)],
        );
        let notices: Vec<_> = got.iter().map(|(_, n)| *n).collect();
        use Notice::*;
        assert_eq!(
            notices,
            vec![
                Some(Firing),
                None,
                Some(Repeat),
                None,
                Some(Resolved),
                Some(Firing)
            ]
        );
    }
}

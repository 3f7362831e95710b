//! Why a step did not complete, and which failures are worth another try.
//!
//! Whether an error is transient is decided by the error types themselves
//! (`is_transient` in `lockdown` and `mcinstall`); here they are only sorted into what the
//! operator must do (attention), what to try again, and what to give up on.

use std::future::Future;
use std::time::Duration;

use lockdown::LockdownError;
use lockdown::activation::ActivationError;
use mcinstall::McInstallError;

use crate::ledger::LedgerError;
use crate::record::Attention;

/// Attempts for a step failing with a transient error (timeouts, dropped connections).
pub const STEP_ATTEMPTS: u32 = 3;

/// Why a step did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    /// A person has to act on the iPad (or in Apple School Manager) first.
    Attention(Attention),
    /// Worth another try (timeouts, a dropped connection).
    Transient(String),
    /// Given up on.
    Fatal(String),
}

impl From<LockdownError> for StepError {
    fn from(e: LockdownError) -> Self {
        match e {
            LockdownError::PasswordProtected => StepError::Attention(Attention::Locked),
            LockdownError::UserDeniedPairing => StepError::Attention(Attention::TrustDenied),
            LockdownError::TrustPromptUnanswered(_) => StepError::Attention(Attention::TrustPrompt),
            e if e.is_transient() => StepError::Transient(e.to_string()),
            other => StepError::Fatal(other.to_string()),
        }
    }
}

impl From<McInstallError> for StepError {
    fn from(e: McInstallError) -> Self {
        match e {
            McInstallError::MustUseAde { .. } => StepError::Attention(Attention::AssignedToAde),
            McInstallError::Lockdown(l) => l.into(),
            e if e.is_transient() => StepError::Transient(e.to_string()),
            other => StepError::Fatal(other.to_string()),
        }
    }
}

impl From<ActivationError> for StepError {
    fn from(e: ActivationError) -> Self {
        match e {
            ActivationError::ActivationLocked => StepError::Attention(Attention::ActivationLocked),
            ActivationError::Lockdown(l) => l.into(),
            e if e.is_transient() => StepError::Transient(e.to_string()),
            other => StepError::Fatal(other.to_string()),
        }
    }
}

impl From<LedgerError> for StepError {
    fn from(e: LedgerError) -> Self {
        StepError::Fatal(format!("ledger: {e}"))
    }
}

/// Runs `f` again on transient errors, with a growing pause, up to [`STEP_ATTEMPTS`] times.
pub async fn retrying<T, F, Fut>(mut f: F) -> Result<T, StepError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StepError>>,
{
    let mut attempt = 1;
    loop {
        match f().await {
            Err(StepError::Transient(e)) if attempt < STEP_ATTEMPTS => {
                tracing::info!("transient error (attempt {attempt}/{STEP_ATTEMPTS}): {e}");
                pause_before_retry(attempt).await;
                attempt += 1;
            }
            other => return other.map_err(|e| e.after_attempts(attempt)),
        }
    }
}

/// The pause after failed attempt `attempt` (1-based): 0.5 s, 1 s, … growing linearly.
pub async fn pause_before_retry(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
}

impl StepError {
    /// A transient error that used up its attempts becomes fatal, saying so; others stay.
    pub fn after_attempts(self, attempts: u32) -> StepError {
        match self {
            StepError::Transient(e) => StepError::Fatal(format!("{e} (after {attempts} attempts)")),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_errors_are_sorted_by_who_must_act() {
        let cases: Vec<(StepError, StepError)> = vec![
            (
                LockdownError::PasswordProtected.into(),
                StepError::Attention(Attention::Locked),
            ),
            (
                LockdownError::UserDeniedPairing.into(),
                StepError::Attention(Attention::TrustDenied),
            ),
            (
                ActivationError::ActivationLocked.into(),
                StepError::Attention(Attention::ActivationLocked),
            ),
            (
                McInstallError::MustUseAde {
                    description: "x".into(),
                }
                .into(),
                StepError::Attention(Attention::AssignedToAde),
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        let io = LockdownError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(matches!(StepError::from(io), StepError::Transient(_)));
        let closed = McInstallError::ConnectionClosed { request: "Flush" };
        assert!(matches!(StepError::from(closed), StepError::Transient(_)));
        let refused = LockdownError::Device {
            request: "StartService",
            name: "InvalidService".into(),
        };
        assert!(matches!(StepError::from(refused), StepError::Fatal(_)));
        let garbled = McInstallError::MalformedReply {
            request: "Escalate",
            reason: "torn frame".into(),
        };
        assert!(matches!(StepError::from(garbled), StepError::Transient(_)));
        let inactive = LockdownError::Device {
            request: "GetValue",
            name: "SessionInactive".into(),
        };
        assert!(matches!(StepError::from(inactive), StepError::Transient(_)));
        let locked = ActivationError::ActivationLocked;
        assert!(matches!(StepError::from(locked), StepError::Attention(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_a_bounded_number_of_times() {
        let mut calls = 0;
        let result: Result<(), StepError> = retrying(|| {
            calls += 1;
            async { Err(StepError::Transient("dropped".into())) }
        })
        .await;
        assert_eq!(calls, STEP_ATTEMPTS);
        assert_eq!(
            result,
            Err(StepError::Fatal("dropped (after 3 attempts)".into()))
        );

        let mut calls = 0;
        let result: Result<(), StepError> = retrying(|| {
            calls += 1;
            async { Err(StepError::Attention(Attention::Locked)) }
        })
        .await;
        assert_eq!(calls, 1, "a person must act: no retry");
        assert_eq!(result, Err(StepError::Attention(Attention::Locked)));
    }
}

//! Pairing: a trusted lockdownd session with our pair record, or a new pairing — silent in
//! Setup Assistant, the "Trust This Computer?" prompt otherwise, supervised pairing when the
//! iPad only lets its supervisor in.

use std::time::{Duration, Instant};

use lockdown::{ChallengeSigner, DeviceRef, DeviceSession, LockdownError, PairingFile};

use super::Context;
use super::assess::PublicFacts;
use super::error::StepError;
use super::progress::Reporter;
use crate::record::{Attention, Step};
use crate::settings::Settings;

/// How long a "Trust This Computer?" prompt may stay unanswered before the operator is told.
const TRUST_NUDGE: Duration = Duration::from_secs(3);
/// How long, in all, to wait for someone to tap Trust.
const TRUST_GIVE_UP: Duration = Duration::from_secs(600);
/// How long to keep trying when the link itself fails while pairing.
const LINK_PATIENCE: Duration = Duration::from_secs(30);
/// How often a passcode-locked iPad is asked again: it answers at once, so this only bounds
/// how soon after the unlock the work resumes.
const LOCKED_RETRY: Duration = Duration::from_secs(2);
/// How long, in all, to wait for someone to unlock it; a replug starts a new wait.
const LOCKED_GIVE_UP: Duration = Duration::from_secs(30 * 60);

/// A trusted session, and who the iPad waited for before it trusted us (shown in the journal).
pub struct Paired {
    pub session: DeviceSession,
    pub record: PairingFile,
    pub waited_for: Option<Attention>,
}

/// Pairs (or reuses our pairing) and opens a TLS session. While the iPad waits for a person
/// (Trust to be tapped, the passcode to be entered) it steps aside so the next iPad proceeds,
/// and it is asked again on its own.
///
/// While it waits, the public values are read once into `public` (the board names the model,
/// and an iPad nobody trusts is recorded with it).
pub async fn pair(
    ctx: &Context,
    settings: &Settings,
    device: &DeviceRef,
    reporter: &mut Reporter,
    public: &mut Option<PublicFacts>,
) -> Result<Paired, StepError> {
    let started = Instant::now();
    let mut waited_for = None;
    loop {
        if waited_for.is_some() {
            // Waiting anyway: a round trip costs the operator nothing now.
            super::learn_public(device, reporter, public).await;
        }
        match lockdown::trusted_session(device.clone(), Some(&ctx.pair_store), TRUST_NUDGE).await {
            Ok((session, record)) => {
                // Back in line if it stepped aside while waiting for a person.
                reporter.come_back().await;
                return Ok(Paired {
                    session,
                    record,
                    waited_for,
                });
            }
            Err(LockdownError::TrustPromptUnanswered(_)) if started.elapsed() < TRUST_GIVE_UP => {
                // Keep asking; the operator sees what to do meanwhile, and the next iPad in
                // the queue goes ahead instead of waiting for someone to tap Trust.
                waited_for = Some(Attention::TrustPrompt);
                reporter.attention(Attention::TrustPrompt, Some(Step::Paired));
                reporter.step_aside();
            }
            Err(LockdownError::PasswordProtected) if started.elapsed() < LOCKED_GIVE_UP => {
                // A locked iPad refuses to pair until someone enters its passcode
                // (docs/fidelity.md §2): the same as the Trust prompt, asked again at a pace.
                waited_for = Some(Attention::Locked);
                reporter.attention(Attention::Locked, Some(Step::Paired));
                reporter.step_aside();
                tokio::time::sleep(LOCKED_RETRY).await;
            }
            Err(LockdownError::Device { name, .. }) if name == "MCProtected" => {
                // Only its supervisor may pair; without an identity that cannot be us.
                let Some(signer) = settings.identity.clone() else {
                    return Err(StepError::Attention(Attention::SupervisedByOther));
                };
                let (session, record) = pair_supervised(ctx, device, signer.as_ref()).await?;
                return Ok(Paired {
                    session,
                    record,
                    waited_for,
                });
            }
            Err(e) => match StepError::from(e) {
                StepError::Transient(_) if started.elapsed() < LINK_PATIENCE => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                other => return Err(other),
            },
        }
    }
}

/// What the journal says an iPad waited for before it trusted us.
pub fn waited_note(attention: &Attention) -> Option<&'static str> {
    match attention {
        Attention::Locked => Some("waited for the passcode to be entered"),
        Attention::TrustPrompt => Some("waited for Trust to be tapped"),
        _ => None,
    }
}

/// Supervised pairing: the iPad asks for a challenge signed by its supervisor's identity.
async fn pair_supervised(
    ctx: &Context,
    device: &DeviceRef,
    signer: &dyn ChallengeSigner,
) -> Result<(DeviceSession, PairingFile), StepError> {
    let mut session = DeviceSession::connect(device.clone()).await?;
    let record = lockdown::pair_supervised_and_save(
        &mut session,
        Some(&ctx.pair_store),
        Some("cartprep"),
        signer,
    )
    .await
    .map_err(|e| match e {
        // Refused: we are not its supervisor.
        LockdownError::Device { .. } => StepError::Attention(Attention::SupervisedByOther),
        other => other.into(),
    })?;
    let mut session = DeviceSession::connect(device.clone()).await?;
    session.start_session(&record).await?;
    Ok((session, record))
}

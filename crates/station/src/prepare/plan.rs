//! Plan: the decisions that matter to a school, as one pure function from what the iPad is
//! ([`Assessment`]) and what we want ([`Wanted`]) to what to do ([`Plan`]).
//!
//! | the iPad | plan |
//! |---|---|
//! | not activated (new, or erased) | prepare everything, activation first |
//! | prepared by us, same settings, our Wi-Fi, our name | already done: not touched |
//! | given another organisation's configuration by Apple School Manager | attention: they must release it |
//! | set up by someone else, or by us with another MDM | erase if the policy allows, else attention |
//! | ours with other settings (or a step missing) | prepare what is missing |
//! | activated, nothing set up | prepare from supervision on |
//! | activated, and an operator asked to erase it (`cartprep erase`) | erase |
//!
//! A cloud configuration cannot be replaced on an iPad (it is refused while one exists), so
//! anything set up by another hand can only be erased.

use crate::config::{ErasePolicy, MdmMode};
use crate::record::{Attention, DeviceRecord, Step};

use super::assess::{Assessment, CloudFacts};

/// What the settings want a prepared iPad to look like, and what may be done to get there.
#[derive(Debug, Clone)]
pub struct Wanted<'a> {
    pub mode: MdmMode,
    /// Our organisation's name (`organization.name`).
    pub organization: &'a str,
    /// Our supervision certificate (DER); `None` in ADE mode without an identity.
    pub certificate: Option<&'a [u8]>,
    pub enrollment_url: &'a str,
    /// The device name from the naming template.
    pub name: &'a str,
    /// The fingerprint of the settings (see `StationConfig::fingerprint`).
    pub fingerprint: &'a str,
    pub erase: &'a ErasePolicy,
    /// An erase an operator asked for (`cartprep erase`), as it is to be journaled.
    pub erase_requested: Option<&'a str>,
}

/// Something to do to the iPad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Activate it (mobileactivationd and the activation server).
    Activate,
    /// Manual mode: write our cloud configuration (supervision, MDM URL, skipped panes).
    SetCloudConfiguration,
    /// Manual mode: escalate with our identity and install the Wi-Fi profile silently (the
    /// escalation holds for one connection only, so both go together).
    EscalateAndInstallWifi,
    /// ADE mode: send the Wi-Fi profile before the device fetches its configuration (it needs
    /// a network to reach Apple and the MDM).
    SendWifiBeforeSetup,
    /// ADE mode: the device fetches and applies its configuration from Apple.
    ApplyAdeConfiguration,
    /// ADE mode: make sure the Wi-Fi profile is installed now that the iPad is supervised.
    InstallWifiIfMissing,
    /// Name it (and set language, region and time zone).
    Name,
}

/// One journaled step: its actions run, then the step is recorded as completed. A step with
/// no action was already true of the iPad and is recorded as such.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStep {
    pub step: Step,
    pub actions: Vec<Action>,
}

/// What to do with the iPad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Prepared by us with these settings: leave it alone.
    AlreadyDone,
    /// Erase it (allowed by the policy, for this reason); it comes back new.
    Erase { reason: String },
    /// A person has to act first.
    Attention(Attention),
    /// These steps, in order, then done.
    Prepare(Vec<PlannedStep>),
}

/// Decides what to do with the iPad. Pure: no device, no ledger, no clock.
pub fn plan(a: &Assessment, wanted: &Wanted<'_>, record: &DeviceRecord) -> Plan {
    let Some(config) = &a.config else {
        // Not activated: nothing is set up yet (and nothing to erase, even if asked).
        return Plan::Prepare(steps(wanted.mode, false, None, false));
    };
    // An operator's explicit request overrides the policy: it is their decision, recorded
    // with who and why.
    if let Some(reason) = wanted.erase_requested {
        return Plan::Erase {
            reason: reason.to_owned(),
        };
    }
    let cloud = config.cloud.as_ref();
    if let Some(attention) = assigned_elsewhere(cloud, wanted, record) {
        return Plan::Attention(attention);
    }
    let ours = cloud.is_some_and(|c| c.supervised_by(wanted.certificate));
    let prepared_by_us = cloud.is_some_and(|c| prepared_by_us(c, wanted));
    let same_settings = record
        .settings_fingerprint
        .as_deref()
        .is_none_or(|f| f == wanted.fingerprint);
    if prepared_by_us && config.wifi_installed && a.device.name == wanted.name && same_settings {
        return Plan::AlreadyDone;
    }
    if let Some(c) = cloud
        && !prepared_by_us
    {
        return match wanted.erase.allows(&a.device.serial, ours) {
            Some(reason) => Plan::Erase { reason },
            None if c.supervised && !ours => Plan::Attention(Attention::SupervisedByOther),
            None => Plan::Attention(Attention::AlreadySetUp),
        };
    }
    Plan::Prepare(steps(wanted.mode, true, cloud, config.wifi_installed))
}

/// Whether the iPad's configuration came from another organisation's Apple School Manager: it
/// was applied from ADE (`ConfigurationSource` 1, which only the device writes), names an
/// organisation that is not ours, and does not enroll in our MDM. Such an iPad gets the same
/// configuration again after an erase, so only its release by that organisation helps.
/// Decided after activation too (activation is when the device learns its assignment).
///
/// A configuration on an iPad our pipeline prepared (the ledger has it done since its last
/// erase: ADE mode, whatever name our Apple School Manager gives the organisation) is ours.
/// In ADE mode an iPad assigned to our MDM server gets its configuration at activation on a
/// real device; `organization.name` should then match the name in Apple School Manager, or
/// `mdm.enrollment_url` the profile's URL, for it not to be taken for another organisation's.
pub fn assigned_elsewhere(
    cloud: Option<&CloudFacts>,
    wanted: &Wanted<'_>,
    record: &DeviceRecord,
) -> Option<Attention> {
    let cloud = cloud?;
    if prepared_since_last_erase(record) {
        return None;
    }
    let organization = cloud.organization.as_deref()?.trim();
    let same = |a: &str, b: &str| a.trim().eq_ignore_ascii_case(b.trim());
    let elsewhere = cloud.source == Some(1)
        && !organization.is_empty()
        && !same(organization, wanted.organization)
        && cloud
            .configuration_url
            .as_deref()
            .is_none_or(|u| !same(u, wanted.enrollment_url));
    elsewhere.then(|| Attention::AssignedElsewhere {
        organization: organization.to_owned(),
    })
}

/// Whether the ledger has the iPad prepared (a `Done` step) since it was last erased.
fn prepared_since_last_erase(record: &DeviceRecord) -> bool {
    record
        .history
        .iter()
        .rev()
        .filter(|e| e.error.is_none())
        .take_while(|e| e.step != Step::Erased)
        .any(|e| e.step == Step::Done)
}

/// Whether a cloud configuration is the one our settings write.
fn prepared_by_us(cloud: &CloudFacts, wanted: &Wanted<'_>) -> bool {
    match wanted.mode {
        MdmMode::Manual => {
            cloud.supervised_by(wanted.certificate)
                && cloud.configuration_url.as_deref() == Some(wanted.enrollment_url)
        }
        // Applied by the device from its ADE assignment.
        MdmMode::Ade => cloud.source == Some(1),
    }
}

/// The steps from activation to named, each with only the actions still missing.
fn steps(
    mode: MdmMode,
    activated: bool,
    cloud: Option<&CloudFacts>,
    wifi_installed: bool,
) -> Vec<PlannedStep> {
    let when = |cond: bool, action: Action| if cond { vec![action] } else { vec![] };
    let has_cloud = cloud.is_some();
    let mut out = vec![PlannedStep {
        step: Step::Activated,
        actions: when(!activated, Action::Activate),
    }];
    match mode {
        MdmMode::Manual => {
            out.push(PlannedStep {
                step: Step::Supervised,
                actions: when(!has_cloud, Action::SetCloudConfiguration),
            });
            // One visible step: the escalation only serves the silent install that follows it.
            out.push(PlannedStep {
                step: Step::WifiInstalled,
                actions: when(!wifi_installed, Action::EscalateAndInstallWifi),
            });
        }
        MdmMode::Ade => {
            let mut supervise = when(!has_cloud && !wifi_installed, Action::SendWifiBeforeSetup);
            supervise.extend(when(!has_cloud, Action::ApplyAdeConfiguration));
            out.push(PlannedStep {
                step: Step::Supervised,
                actions: supervise,
            });
            out.push(PlannedStep {
                step: Step::WifiInstalled,
                actions: when(!wifi_installed, Action::InstallWifiIfMissing),
            });
        }
    }
    out.push(PlannedStep {
        step: Step::Named,
        actions: vec![Action::Name],
    });
    out
}

#[cfg(test)]
mod tests {
    use super::super::assess::{Activation, ConfigFacts, DeviceFacts};
    use super::*;
    use crate::config::EraseMode;

    const OURS: &[u8] = b"our certificate";
    const THEIRS: &[u8] = b"their certificate";
    const URL: &str = "https://mdm.example.org/enroll";
    const NAME: &str = "Cart A - 01";
    const SERIAL: &str = "F9FZ1234ABCD";

    fn never() -> ErasePolicy {
        ErasePolicy {
            mode: EraseMode::Never,
            allow_supervised_by_us: false,
            allow_serials: vec![],
        }
    }

    fn rules(allow_supervised_by_us: bool, allow_serials: &[&str]) -> ErasePolicy {
        ErasePolicy {
            mode: EraseMode::Rules,
            allow_supervised_by_us,
            allow_serials: allow_serials.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn wanted(mode: MdmMode, erase: &ErasePolicy) -> Wanted<'_> {
        Wanted {
            mode,
            organization: "Springfield Elementary",
            certificate: Some(OURS),
            enrollment_url: URL,
            name: NAME,
            fingerprint: "fp-now",
            erase,
            erase_requested: None,
        }
    }

    fn device(activated: bool, name: &str) -> DeviceFacts {
        DeviceFacts {
            serial: SERIAL.into(),
            name: name.into(),
            activation: if activated {
                Activation::Activated("Activated".into())
            } else {
                Activation::Unactivated
            },
        }
    }

    fn fresh() -> Assessment {
        Assessment {
            device: device(false, "iPad"),
            config: None,
        }
    }

    fn activated(cloud: Option<CloudFacts>, wifi_installed: bool, name: &str) -> Assessment {
        Assessment {
            device: device(true, name),
            config: Some(ConfigFacts {
                cloud,
                wifi_installed,
                ..ConfigFacts::default()
            }),
        }
    }

    fn supervised_by(cert: &[u8], url: &str) -> CloudFacts {
        CloudFacts {
            supervised: true,
            supervisor_certificates: vec![cert.to_vec()],
            configuration_url: Some(url.into()),
            source: Some(2),
            organization: Some("Somebody".into()),
            ..CloudFacts::default()
        }
    }

    fn unsupervised() -> CloudFacts {
        CloudFacts {
            supervised: false,
            ..CloudFacts::default()
        }
    }

    fn ade_applied() -> CloudFacts {
        CloudFacts {
            supervised: true,
            source: Some(1),
            configuration_url: Some("https://mdm.example.org/ade".into()),
            ..CloudFacts::default()
        }
    }

    fn record(fingerprint: Option<&str>) -> DeviceRecord {
        let mut r = DeviceRecord::new_at(SERIAL, "00008030-0001", 1_000);
        r.settings_fingerprint = fingerprint.map(str::to_owned);
        r
    }

    fn actions(plan: &Plan) -> Vec<Action> {
        match plan {
            Plan::Prepare(steps) => steps.iter().flat_map(|s| s.actions.clone()).collect(),
            other => panic!("expected a prepare plan, got {other:?}"),
        }
    }

    use Action::*;

    #[test]
    fn a_fresh_ipad_gets_everything_activation_first() {
        let never = never();
        let p = plan(&fresh(), &wanted(MdmMode::Manual, &never), &record(None));
        assert_eq!(
            actions(&p),
            [
                Activate,
                SetCloudConfiguration,
                EscalateAndInstallWifi,
                Name
            ]
        );
        let Plan::Prepare(steps) = p else {
            unreachable!()
        };
        let journaled: Vec<Step> = steps.iter().map(|s| s.step).collect();
        assert_eq!(
            journaled,
            [
                Step::Activated,
                Step::Supervised,
                Step::WifiInstalled,
                Step::Named
            ]
        );
    }

    #[test]
    fn a_fresh_ipad_in_ade_mode_gets_wifi_then_its_ade_configuration() {
        let never = never();
        let p = plan(&fresh(), &wanted(MdmMode::Ade, &never), &record(None));
        assert_eq!(
            actions(&p),
            [
                Activate,
                SendWifiBeforeSetup,
                ApplyAdeConfiguration,
                InstallWifiIfMissing,
                Name
            ]
        );
    }

    #[test]
    fn an_activated_ipad_with_nothing_set_up_is_prepared_without_activation() {
        let never = never();
        let p = plan(
            &activated(None, false, "iPad"),
            &wanted(MdmMode::Manual, &never),
            &record(None),
        );
        assert_eq!(
            actions(&p),
            [SetCloudConfiguration, EscalateAndInstallWifi, Name]
        );
    }

    #[test]
    fn ours_with_the_same_settings_is_left_alone() {
        let never = never();
        for fingerprint in [Some("fp-now"), None] {
            let p = plan(
                &activated(Some(supervised_by(OURS, URL)), true, NAME),
                &wanted(MdmMode::Manual, &never),
                &record(fingerprint),
            );
            assert_eq!(p, Plan::AlreadyDone, "recorded fingerprint {fingerprint:?}");
        }
    }

    #[test]
    fn ours_with_other_settings_gets_what_is_missing_but_keeps_its_configuration() {
        let never = never();
        let p = plan(
            &activated(Some(supervised_by(OURS, URL)), true, NAME),
            &wanted(MdmMode::Manual, &never),
            &record(Some("fp-before")),
        );
        assert_eq!(actions(&p), [Name]);

        let p = plan(
            &activated(Some(supervised_by(OURS, URL)), false, "iPad"),
            &wanted(MdmMode::Manual, &never),
            &record(None),
        );
        assert_eq!(actions(&p), [EscalateAndInstallWifi, Name], "Wi-Fi missing");
    }

    #[test]
    fn ours_with_another_name_is_renamed() {
        let never = never();
        let p = plan(
            &activated(Some(supervised_by(OURS, URL)), true, "Teacher's iPad"),
            &wanted(MdmMode::Manual, &never),
            &record(Some("fp-now")),
        );
        assert_eq!(actions(&p), [Name]);
    }

    #[test]
    fn someone_elses_supervised_ipad_needs_attention_unless_erasing_is_allowed() {
        let cases: Vec<(ErasePolicy, Plan)> = vec![
            (never(), Plan::Attention(Attention::SupervisedByOther)),
            (
                rules(true, &[]),
                Plan::Attention(Attention::SupervisedByOther),
            ),
            (
                rules(false, &[SERIAL]),
                Plan::Erase {
                    reason: "serial is on erase.allow_serials".into(),
                },
            ),
        ];
        for (policy, expected) in cases {
            let p = plan(
                &activated(Some(supervised_by(THEIRS, URL)), false, "iPad"),
                &wanted(MdmMode::Manual, &policy),
                &record(None),
            );
            assert_eq!(p, expected, "{policy:?}");
        }
    }

    #[test]
    fn someone_elses_unsupervised_setup_is_already_set_up() {
        let never = never();
        let p = plan(
            &activated(Some(unsupervised()), false, "Teacher's iPad"),
            &wanted(MdmMode::Manual, &never),
            &record(None),
        );
        assert_eq!(p, Plan::Attention(Attention::AlreadySetUp));
    }

    #[test]
    fn ours_pointing_at_another_mdm_may_be_erased_when_the_policy_allows_our_own() {
        let other_url = "https://old-mdm.example.org/enroll";
        let never = never();
        let p = plan(
            &activated(Some(supervised_by(OURS, other_url)), true, NAME),
            &wanted(MdmMode::Manual, &never),
            &record(None),
        );
        assert_eq!(p, Plan::Attention(Attention::AlreadySetUp));

        let allow_ours = rules(true, &[]);
        let p = plan(
            &activated(Some(supervised_by(OURS, other_url)), true, NAME),
            &wanted(MdmMode::Manual, &allow_ours),
            &record(None),
        );
        assert_eq!(
            p,
            Plan::Erase {
                reason: "supervised by our organization and erase.allow_supervised_by_us = true"
                    .into()
            }
        );
    }

    #[test]
    fn ade_applied_configuration_is_ours_in_ade_mode() {
        let never = never();
        let p = plan(
            &activated(Some(ade_applied()), true, NAME),
            &wanted(MdmMode::Ade, &never),
            &record(Some("fp-now")),
        );
        assert_eq!(p, Plan::AlreadyDone);

        let p = plan(
            &activated(Some(ade_applied()), false, "iPad"),
            &wanted(MdmMode::Ade, &never),
            &record(None),
        );
        assert_eq!(actions(&p), [InstallWifiIfMissing, Name]);
    }

    #[test]
    fn in_ade_mode_a_configuration_written_by_hand_is_someone_elses() {
        let never = never();
        let p = plan(
            &activated(Some(supervised_by(THEIRS, URL)), true, "iPad"),
            &wanted(MdmMode::Ade, &never),
            &record(None),
        );
        assert_eq!(p, Plan::Attention(Attention::SupervisedByOther));
    }

    #[test]
    fn an_activated_ipad_in_ade_mode_with_nothing_set_up_applies_its_configuration() {
        let never = never();
        let p = plan(
            &activated(None, false, "iPad"),
            &wanted(MdmMode::Ade, &never),
            &record(None),
        );
        assert_eq!(
            actions(&p),
            [
                SendWifiBeforeSetup,
                ApplyAdeConfiguration,
                InstallWifiIfMissing,
                Name
            ]
        );
        let p = plan(
            &activated(None, true, "iPad"),
            &wanted(MdmMode::Ade, &never),
            &record(None),
        );
        assert_eq!(
            actions(&p),
            [ApplyAdeConfiguration, Name],
            "Wi-Fi already there"
        );
    }

    /// What Apple School Manager applies: `ConfigurationSource` 1, an organisation, a URL.
    fn from_asm(organization: Option<&str>, url: &str) -> CloudFacts {
        CloudFacts {
            supervised: true,
            source: Some(1),
            organization: organization.map(str::to_owned),
            configuration_url: Some(url.into()),
            ..CloudFacts::default()
        }
    }

    #[test]
    fn an_ipad_another_organisation_has_not_released_needs_them_whatever_the_erase_policy() {
        let elsewhere = |org: &str| {
            Plan::Attention(Attention::AssignedElsewhere {
                organization: org.into(),
            })
        };
        let their_url = "https://mdm.shelbyville.example/enroll";
        let everything = rules(true, &[SERIAL]);
        // (mode, configuration, erase policy, plan)
        let cases: Vec<(MdmMode, CloudFacts, &ErasePolicy, Plan)> = vec![
            (
                MdmMode::Manual,
                from_asm(Some("Shelbyville Academy"), their_url),
                &everything,
                elsewhere("Shelbyville Academy"),
            ),
            (
                MdmMode::Ade,
                from_asm(Some(" Shelbyville Academy "), their_url),
                &everything,
                elsewhere("Shelbyville Academy"),
            ),
            // Our own organisation's assignment, named as ours or enrolling in our MDM.
            (
                MdmMode::Ade,
                from_asm(Some("springfield elementary"), their_url),
                &everything,
                Plan::Prepare(vec![]),
            ),
            (
                MdmMode::Ade,
                from_asm(Some("Springfield School District"), URL),
                &everything,
                Plan::Prepare(vec![]),
            ),
            // Nothing says whose it is: the other rules decide.
            (
                MdmMode::Ade,
                from_asm(None, their_url),
                &everything,
                Plan::Prepare(vec![]),
            ),
            // Written by a host (Configurator), not by Apple School Manager: erase may help.
            (
                MdmMode::Manual,
                CloudFacts {
                    source: Some(2),
                    ..from_asm(Some("Shelbyville Academy"), their_url)
                },
                &everything,
                Plan::Erase {
                    reason: "serial is on erase.allow_serials".into(),
                },
            ),
        ];
        for (mode, cloud, policy, expected) in cases {
            let w = wanted(mode, policy);
            let got = plan(
                &activated(Some(cloud.clone()), true, NAME),
                &w,
                &record(None),
            );
            let got = match got {
                Plan::Prepare(_) | Plan::AlreadyDone => Plan::Prepare(vec![]),
                other => other,
            };
            assert_eq!(got, expected, "{mode:?} {cloud:?}");
            assert_eq!(
                assigned_elsewhere(Some(&cloud), &w, &record(None)).is_some(),
                matches!(expected, Plan::Attention(_)),
                "the rule alone, {cloud:?}"
            );
        }
        let w = wanted(MdmMode::Ade, &everything);
        assert_eq!(assigned_elsewhere(None, &w, &record(None)), None);
        // Prepared by our own pipeline (ADE mode: the ledger has it done): ours, whatever our
        // Apple School Manager calls the organisation.
        let mut r = record(Some("fp-now"));
        let shelbyville = from_asm(Some("Shelbyville Academy"), their_url);
        r.begin_attempt();
        r.advance(Step::Activated, None);
        assert!(assigned_elsewhere(Some(&shelbyville), &w, &r).is_some());
        r.advance(Step::Done, None);
        assert_eq!(assigned_elsewhere(Some(&shelbyville), &w, &r), None);
        // Plugged in again: a new attempt starts over from pairing, and it is still ours.
        r.begin_attempt();
        r.advance(Step::Paired, None);
        r.advance(Step::Identified, None);
        assert_eq!(assigned_elsewhere(Some(&shelbyville), &w, &r), None);
        // Erased since: its next configuration is looked at again.
        r.advance(Step::Erased, None);
        r.advance(Step::Activated, None);
        assert!(assigned_elsewhere(Some(&shelbyville), &w, &r).is_some());
    }

    #[test]
    fn without_an_identity_nothing_counts_as_supervised_by_us() {
        let never = never();
        let mut w = wanted(MdmMode::Manual, &never);
        w.certificate = None;
        let p = plan(
            &activated(Some(supervised_by(OURS, URL)), true, NAME),
            &w,
            &record(None),
        );
        assert_eq!(p, Plan::Attention(Attention::SupervisedByOther));
    }

    #[test]
    fn an_operators_erase_request_erases_anything_activated_and_nothing_new() {
        const ASKED: &str = "requested by alice (uid 1000): moving to the new MDM";
        let never = never();
        let erase = Plan::Erase {
            reason: ASKED.into(),
        };
        let cases: Vec<(&str, Assessment, Option<&str>, Plan)> = vec![
            (
                "set up by a teacher, asked",
                activated(Some(unsupervised()), false, "Teacher's iPad"),
                Some(ASKED),
                erase.clone(),
            ),
            (
                "set up by a teacher, not asked",
                activated(Some(unsupervised()), false, "Teacher's iPad"),
                None,
                Plan::Attention(Attention::AlreadySetUp),
            ),
            (
                "another organisation's, asked",
                activated(Some(supervised_by(THEIRS, URL)), false, "iPad"),
                Some(ASKED),
                erase.clone(),
            ),
            (
                "ours and done, asked",
                activated(Some(supervised_by(OURS, URL)), true, NAME),
                Some(ASKED),
                erase.clone(),
            ),
            (
                "activated with nothing set up, asked",
                activated(None, false, "iPad"),
                Some(ASKED),
                erase,
            ),
        ];
        for (what, assessment, asked, expected) in cases {
            let mut w = wanted(MdmMode::Manual, &never);
            w.erase_requested = asked;
            assert_eq!(plan(&assessment, &w, &record(None)), expected, "{what}");
        }
        let mut w = wanted(MdmMode::Manual, &never);
        w.erase_requested = Some(ASKED);
        assert_eq!(
            actions(&plan(&fresh(), &w, &record(None))),
            [
                Activate,
                SetCloudConfiguration,
                EscalateAndInstallWifi,
                Name
            ],
            "a new iPad has nothing to erase"
        );
    }
}

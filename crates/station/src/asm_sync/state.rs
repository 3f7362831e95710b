//! What the ledger keeps of Apple School Manager for one iPad, and the decisions made from it,
//! as pure functions (tested row by row below).

use serde::{Deserialize, Serialize};

use crate::config::MdmMode;
use crate::record::Attention;

/// Apple School Manager's side of one iPad.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsmRecord {
    /// What the look-up said when the iPad was last identified.
    pub lookup: AsmLookup,
    /// The assignment to our server after it was done; `None` until then (or when `assign`
    /// is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment: Option<Assignment>,
}

/// The look-up of a serial.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum AsmLookup {
    /// Held by the organization; `server` is the name (or ID) of the service it is assigned to.
    InOrganization {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server_id: Option<String>,
    },
    NotInOrganization,
    /// The look-up failed (network, rate limit…): preparation went on without it.
    Unknown {
        error: String,
    },
}

/// The assignment to our server, journaled at each stage so a restart resumes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Assignment {
    /// Decided, not yet sent (or not known to have been).
    Pending { server: String },
    /// The activity was created; its outcome is not known yet.
    Submitted { server: String, activity_id: String },
    /// Assigned: by our activity, or it already was.
    Assigned {
        server: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        activity_id: Option<String>,
    },
    /// Not assigned, and why (a failed activity, a device not in the organization…).
    NotAssigned {
        server: String,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        activity_id: Option<String>,
    },
}

impl Assignment {
    /// Whether work remains (resumed from the journal after a restart).
    pub fn is_open(&self) -> bool {
        matches!(
            self,
            Assignment::Pending { .. } | Assignment::Submitted { .. }
        )
    }

    /// The ledger's words for it.
    pub fn describe(&self) -> String {
        match self {
            Assignment::Pending { server } => format!("assignment in ASM to {server} pending"),
            Assignment::Submitted {
                server,
                activity_id,
            } => format!("assignment in ASM to {server} submitted (activity {activity_id})"),
            Assignment::Assigned {
                server,
                activity_id: Some(id),
            } => format!("assigned in ASM to {server} (activity {id})"),
            Assignment::Assigned {
                server,
                activity_id: None,
            } => format!("assigned in ASM to {server} (it already was)"),
            Assignment::NotAssigned {
                server,
                reason,
                activity_id,
            } => format!(
                "not assigned in ASM to {server}: {reason}{}",
                activity_id
                    .as_ref()
                    .map(|id| format!(" (activity {id})"))
                    .unwrap_or_default()
            ),
        }
    }
}

impl AsmRecord {
    /// One word or phrase for the CSV export's ASM column.
    pub fn summary(&self) -> String {
        match (&self.assignment, &self.lookup) {
            (Some(a), _) => a.describe(),
            (
                None,
                AsmLookup::InOrganization {
                    server: Some(s), ..
                },
            ) => {
                format!("in ASM, assigned to {s}")
            }
            (None, AsmLookup::InOrganization { server: None, .. }) => "in ASM, unassigned".into(),
            (None, AsmLookup::NotInOrganization) => "not in ASM".into(),
            (None, AsmLookup::Unknown { error }) => format!("ASM look-up failed: {error}"),
        }
    }
}

/// What to do with an iPad after its look-up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Go on; the note goes in the history.
    Continue { note: String },
    /// Go on, but show the operator this attention (preparation is not stopped).
    Warn { attention: Attention, note: String },
    /// Stop: the iPad needs a person.
    Stop(Attention),
}

/// Decides from the look-up. Manual mode: an iPad the organization does not hold is shown as
/// needing attention and prepared anyway, unless `stop_if_not_in_organization`. ADE mode: the
/// iPad must be assigned to our server, or its cloud configuration comes from elsewhere. A
/// failed look-up never stops preparation.
pub fn verdict(
    mode: MdmMode,
    lookup: &AsmLookup,
    our_server_id: Option<&str>,
    stop_if_not_in_organization: bool,
) -> Verdict {
    match (mode, lookup) {
        (_, AsmLookup::Unknown { error }) => Verdict::Continue {
            note: format!("Apple School Manager look-up failed ({error}); going on without it"),
        },
        (MdmMode::Ade, AsmLookup::NotInOrganization) => Verdict::Stop(Attention::NotInOrganization),
        (MdmMode::Manual, AsmLookup::NotInOrganization) if stop_if_not_in_organization => {
            Verdict::Stop(Attention::NotInOrganization)
        }
        (MdmMode::Manual, AsmLookup::NotInOrganization) => Verdict::Warn {
            attention: Attention::NotInOrganization,
            note: Attention::NotInOrganization.message().into_owned(),
        },
        (MdmMode::Ade, AsmLookup::InOrganization { server_id, .. })
            if our_server_id.is_some() && server_id.as_deref() != our_server_id =>
        {
            Verdict::Stop(Attention::NotAssignedToAde)
        }
        (_, AsmLookup::InOrganization { server, .. }) => Verdict::Continue {
            note: match server {
                Some(s) => format!("in Apple School Manager, assigned to {s}"),
                None => "in Apple School Manager, not assigned to a server".into(),
            },
        },
    }
}

/// Whether a done iPad is to be assigned: assignment on, held by the organization (or not
/// known), and not already assigned to our server. An iPad not in the organization cannot be
/// assigned: that is recorded instead.
pub fn assignment_after_done(
    assign: bool,
    lookup: &AsmLookup,
    our_server_id: Option<&str>,
) -> AfterDone {
    if !assign {
        return AfterDone::Nothing;
    }
    match lookup {
        AsmLookup::NotInOrganization => AfterDone::CannotAssign,
        AsmLookup::InOrganization { server_id, .. }
            if our_server_id.is_some() && server_id.as_deref() == our_server_id =>
        {
            AfterDone::AlreadyAssigned
        }
        _ => AfterDone::Assign,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterDone {
    Nothing,
    Assign,
    AlreadyAssigned,
    CannotAssign,
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "OURS";

    fn in_org(id: Option<&str>) -> AsmLookup {
        AsmLookup::InOrganization {
            server: id.map(|i| format!("server {i}")),
            server_id: id.map(str::to_owned),
        }
    }

    #[test]
    fn the_look_up_verdict_row_by_row() {
        use Attention::*;
        let unknown = AsmLookup::Unknown {
            error: "timeout".into(),
        };
        let rows: Vec<(MdmMode, AsmLookup, bool, &str)> = vec![
            (MdmMode::Manual, in_org(None), false, "continue"),
            (MdmMode::Manual, in_org(Some("OTHER")), false, "continue"),
            (MdmMode::Manual, AsmLookup::NotInOrganization, false, "warn"),
            (
                MdmMode::Manual,
                AsmLookup::NotInOrganization,
                true,
                "stop:not-in-org",
            ),
            (MdmMode::Manual, unknown.clone(), true, "continue"),
            (MdmMode::Ade, in_org(Some(OURS)), false, "continue"),
            (
                MdmMode::Ade,
                in_org(Some("OTHER")),
                false,
                "stop:not-assigned",
            ),
            (MdmMode::Ade, in_org(None), false, "stop:not-assigned"),
            (
                MdmMode::Ade,
                AsmLookup::NotInOrganization,
                false,
                "stop:not-in-org",
            ),
            (MdmMode::Ade, unknown, false, "continue"),
        ];
        for (mode, lookup, stop, want) in rows {
            let got = match verdict(mode, &lookup, Some(OURS), stop) {
                Verdict::Continue { .. } => "continue",
                Verdict::Warn {
                    attention: NotInOrganization,
                    ..
                } => "warn",
                Verdict::Warn { .. } => "warn:other",
                Verdict::Stop(NotInOrganization) => "stop:not-in-org",
                Verdict::Stop(NotAssignedToAde) => "stop:not-assigned",
                Verdict::Stop(_) => "stop:other",
            };
            assert_eq!(got, want, "{mode:?} {lookup:?} stop={stop}");
        }
    }

    #[test]
    fn the_warning_says_what_to_do() {
        let Verdict::Warn { note, .. } =
            verdict(MdmMode::Manual, &AsmLookup::NotInOrganization, None, false)
        else {
            panic!("a warning");
        };
        assert_eq!(
            note,
            "not in your Apple School Manager: ask the seller or the previous owner"
        );
    }

    #[test]
    fn assignment_after_done_row_by_row() {
        let rows = [
            (false, in_org(None), AfterDone::Nothing),
            (true, in_org(None), AfterDone::Assign),
            (true, in_org(Some("OTHER")), AfterDone::Assign),
            (true, in_org(Some(OURS)), AfterDone::AlreadyAssigned),
            (true, AsmLookup::NotInOrganization, AfterDone::CannotAssign),
            (
                true,
                AsmLookup::Unknown { error: "x".into() },
                AfterDone::Assign,
            ),
        ];
        for (assign, lookup, want) in rows {
            assert_eq!(
                assignment_after_done(assign, &lookup, Some(OURS)),
                want,
                "{assign} {lookup:?}"
            );
        }
    }

    #[test]
    fn the_ledger_words_name_the_server_and_the_activity() {
        let a = Assignment::Assigned {
            server: "Mosyle".into(),
            activity_id: Some("84d7f133".into()),
        };
        assert_eq!(
            a.describe(),
            "assigned in ASM to Mosyle (activity 84d7f133)"
        );
        assert!(!a.is_open());
        assert!(
            Assignment::Submitted {
                server: "Mosyle".into(),
                activity_id: "x".into()
            }
            .is_open()
        );
    }
}

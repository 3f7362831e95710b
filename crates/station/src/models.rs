//! Marketing names of iPad models, for the status log and exports ("iPad (9th generation)"
//! reads better across a room than "iPad12,1").

/// `(ProductType, marketing name)`.
const IPADS: &[(&str, &str)] = &[
    ("iPad6,11", "iPad (5th generation)"),
    ("iPad6,12", "iPad (5th generation)"),
    ("iPad7,5", "iPad (6th generation)"),
    ("iPad7,6", "iPad (6th generation)"),
    ("iPad7,11", "iPad (7th generation)"),
    ("iPad7,12", "iPad (7th generation)"),
    ("iPad11,6", "iPad (8th generation)"),
    ("iPad11,7", "iPad (8th generation)"),
    ("iPad12,1", "iPad (9th generation)"),
    ("iPad12,2", "iPad (9th generation)"),
    ("iPad13,18", "iPad (10th generation)"),
    ("iPad13,19", "iPad (10th generation)"),
    ("iPad15,7", "iPad (A16)"),
    ("iPad15,8", "iPad (A16)"),
    ("iPad11,3", "iPad Air (3rd generation)"),
    ("iPad11,4", "iPad Air (3rd generation)"),
    ("iPad13,1", "iPad Air (4th generation)"),
    ("iPad13,2", "iPad Air (4th generation)"),
    ("iPad13,16", "iPad Air (5th generation)"),
    ("iPad13,17", "iPad Air (5th generation)"),
    ("iPad11,1", "iPad mini (5th generation)"),
    ("iPad11,2", "iPad mini (5th generation)"),
    ("iPad14,1", "iPad mini (6th generation)"),
    ("iPad14,2", "iPad mini (6th generation)"),
    ("iPad16,1", "iPad mini (A17 Pro)"),
    ("iPad16,2", "iPad mini (A17 Pro)"),
];

pub fn marketing_name(product_type: &str) -> Option<&'static str> {
    IPADS
        .iter()
        .find(|(p, _)| *p == product_type)
        .map(|(_, n)| *n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_and_unknown_models() {
        assert_eq!(
            super::marketing_name("iPad12,1"),
            Some("iPad (9th generation)")
        );
        assert_eq!(super::marketing_name("iPad99,9"), None);
    }
}

//! Wording of notices (SMS, e-mail, webhook JSON) and the GSM 03.38 alphabet and segment arithmetic that
//! SMS costs depend on.

pub mod gsm;
pub(crate) mod template;

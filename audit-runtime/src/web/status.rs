//! Outcomes from HTTP status codes.

use ::http::StatusCode;

use crate::model::event::Outcome;
use crate::model::outcome::AuditError;
use crate::util::text::Text;

/// The outcome of a request that ended with `status`: 1xx, 2xx and 3xx are
/// SUCCESS; 401 and 403 are DENIED (`Unauthorized`, `Forbidden`); every
/// other 4xx and 5xx is FAILURE with the status's name as `error_type`
/// (`NotFound`, `InternalServerError`, or `Http418` for a code without a
/// standard name) and `HTTP <code>` as the message.
pub fn outcome_for_status(status: StatusCode) -> Outcome {
    match status.as_u16() {
        0..=399 => Outcome::SUCCESS,
        401 => Outcome::denied("Unauthorized"),
        403 => Outcome::denied("Forbidden"),
        code => failure(code, status.canonical_reason()),
    }
}

fn failure(code: u16, reason: Option<&str>) -> Outcome {
    let ty = match reason {
        Some(r) => Text::from(
            r.replace('\'', "")
                .split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(|w| {
                    let mut cs = w.chars();
                    let first = cs.next().map(|c| c.to_ascii_uppercase());
                    first.into_iter().chain(cs).collect::<String>()
                })
                .collect::<String>(),
        ),
        None => Text::from(format!("Http{code}")),
    };
    Outcome::failure(ty, Text::from(format!("HTTP {code}")))
}

/// A handler returning `Err(StatusCode)` records what the status says:
/// DENIED for 401 and 403, FAILURE otherwise (see [`outcome_for_status`]).
impl AuditError for StatusCode {
    fn audit_outcome(&self) -> Outcome {
        match self.as_u16() {
            0..=399 => failure(self.as_u16(), self.canonical_reason()),
            _ => outcome_for_status(*self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::event::OutcomeStatus;

    #[test]
    fn statuses() {
        let o = |c: u16| outcome_for_status(StatusCode::from_u16(c).unwrap());
        assert_eq!(o(200).status, OutcomeStatus::Success);
        assert_eq!(o(304).status, OutcomeStatus::Success);
        assert_eq!(o(401), Outcome::denied("Unauthorized"));
        assert_eq!(o(403), Outcome::denied("Forbidden"));
        assert_eq!(o(404), Outcome::failure("NotFound", "HTTP 404"));
        assert_eq!(o(500), Outcome::failure("InternalServerError", "HTTP 500"));
        assert_eq!(o(418), Outcome::failure("ImATeapot", "HTTP 418"));
        assert_eq!(o(599), Outcome::failure("Http599", "HTTP 599"));
        assert_eq!(o(999), Outcome::failure("Http999", "HTTP 999"));
        assert_eq!(
            StatusCode::OK.audit_outcome().status,
            OutcomeStatus::Failure
        );
    }
}

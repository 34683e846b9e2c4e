use phi_audit::AuditError;

#[derive(Debug, AuditError)]
#[audit(denied)]
enum OnTheEnum {
    A,
}

#[derive(Debug, AuditError)]
enum Bad {
    #[audit(error_type = format!("{}", 1))]
    NotALiteral,
    #[audit(mesage = "typo")]
    UnknownKey,
    #[audit(denied = true)]
    DeniedWithValue,
    #[audit(error_type = "", message = "line one\nline two")]
    OutOfBounds,
    #[audit(denied, denied)]
    Twice,
    #[audit(crate = ::phi_audit)]
    CrateOnVariant,
    Field(#[audit(message = "x")] String),
    #[audit]
    Bare,
}

#[derive(AuditError)]
union U {
    a: u8,
}

fn main() {}

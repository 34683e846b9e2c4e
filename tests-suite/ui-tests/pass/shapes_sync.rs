//! Every synchronous shape of function `#[audited]` supports.

use std::fmt::Display;

use phi_audit::{audited, AuditError, Outcome};

#[derive(Debug)]
pub enum AppError {
    Denied,
    Io(std::io::Error),
}

impl From<std::io::Error> for AppError {
    fn from(e: std::io::Error) -> Self {
        AppError::Io(e)
    }
}

impl AuditError for AppError {
    fn audit_outcome(&self) -> Outcome {
        match self {
            AppError::Denied => Outcome::denied("RoleDenied"),
            AppError::Io(_) => Outcome::failure("IoError", "storage unavailable"),
        }
    }
}

fn io_step(ok: bool) -> std::io::Result<u32> {
    if ok {
        Ok(1)
    } else {
        Err(std::io::Error::other("disk"))
    }
}

/// Free function; doc comments and other attributes are kept.
#[audited(action = "READ", resource = "Patient", id = patient_id)]
#[inline]
#[must_use]
pub fn free(patient_id: &str, ok: bool) -> Result<u32, AppError> {
    if patient_id.is_empty() {
        return Err(AppError::Denied); // early return
    }
    let n = io_step(ok)?; // `?` with a `From` conversion
    Ok(n)
}

/// No return type at all.
#[audited(action = "LOGOUT", resource = "Session")]
pub fn unit() {}

pub struct Store {
    id: u64,
    items: Vec<String>,
}

impl Store {
    #[audited(action = "READ", resource = "Store", id = self.id)]
    pub fn by_ref(&self) -> usize {
        self.items.len()
    }

    /// Returns a borrow of a `&mut` argument.
    #[audited(action = "UPDATE", resource = "Store", id = self.id)]
    pub fn by_mut(&mut self, item: String) -> &mut String {
        self.items.push(item);
        self.items.last_mut().expect("just pushed")
    }

    #[audited(action = "DELETE", resource = "Store", id = self.id)]
    pub fn by_value(self) -> Vec<String> {
        self.items
    }

    #[audited(action = "CREATE", resource = "Store", id = id)]
    pub fn new(id: u64) -> Self {
        Store { id, items: Vec::new() }
    }
}

pub trait Repo {
    fn get(&self, id: u64) -> Result<String, AppError>;
}

impl Repo for Store {
    #[audited(action = "READ", resource = "Item", id = id)]
    fn get(&self, id: u64) -> Result<String, AppError> {
        self.items.get(id as usize).cloned().ok_or(AppError::Denied)
    }
}

/// Generics, lifetimes, a where clause and a const generic.
#[audited(action = "EXPORT", resource = "Report", id = key)]
pub fn generic<'a, 'b: 'a, T, const N: usize>(key: &'a str, rows: &'b [T; N]) -> Vec<&'a T>
where
    T: Display + 'b,
{
    rows.iter().collect()
}

/// `impl Trait` in argument and return position.
#[audited(action = "PRINT", resource = "Label", id = label.to_string())]
pub fn impl_trait(label: impl Display, n: u32) -> impl Iterator<Item = u32> + Clone {
    0..n
}

/// # Safety
/// `p` must be valid for reads.
#[audited(action = "READ", resource = "Buffer")]
pub unsafe fn raw(p: *const u8) -> u8 {
    unsafe { *p }
}

/// A body that moves its arguments; the attribute read them first.
#[audited(action = "UPDATE", resource = "Note", id = note_id, metadata(len = text.len()))]
pub fn moves(note_id: String, text: String) -> String {
    let mut owned = note_id;
    owned.push_str(&text);
    drop(text);
    owned
}

/// `#[phi]` on a pattern taints every binding it introduces.
#[audited(action = "READ", resource = "Patient", id = mrn)]
pub fn pattern(mrn: &str, #[phi] (first, last): (&str, &str), #[phi] mut notes: Vec<String>) -> usize {
    notes.push(format!("{first} {last}"));
    notes.len()
}

/// `fn f() -> impl Future` is a synchronous function returning a future.
#[audited(action = "READ", resource = "Patient")]
pub fn returns_future(n: u32) -> impl std::future::Future<Output = u32> {
    async move { n }
}

/// A raw identifier as the function name: the action name is `type`.
#[audited(action = "OTHER", resource = "Thing")]
pub fn r#type() {}

/// `impl Trait` inside a `Result`, with `?` converting the error.
#[audited(action = "READ", resource = "Patient")]
pub fn impl_in_result(ok: bool) -> Result<impl Display, AppError> {
    let n = io_step(ok)?;
    Ok(n)
}

/// A C ABI function.
#[audited(action = "OTHER", resource = "Ffi")]
pub extern "C" fn c_abi(x: u32) -> u32 {
    x + 1
}

impl Store {
    /// A typed receiver.
    #[audited(action = "DELETE", resource = "Store", id = self.id)]
    pub fn boxed(self: Box<Self>) -> usize {
        self.items.len()
    }
}

/// Arguments named like the generated locals do not collide with them.
#[audited(action = "READ", resource = "Patient", id = __phi_audit_call)]
pub fn collide(__phi_audit_call: u32, __phi_audit_ret: u32) -> u32 {
    let __phi_audit_entered = __phi_audit_call + __phi_audit_ret;
    __phi_audit_entered
}

fn main() {
    let _ = impl_in_result(true).map(|d| d.to_string());
    let _ = c_abi(1);
    let _ = Box::new(Store::new(2)).boxed();
    let _ = collide(1, 2);
    let _ = free("p", true);
    unit();
    let mut s = Store::new(1);
    s.by_mut("a".into()).push('b');
    let _ = s.by_ref();
    let _ = s.get(0);
    let _ = s.by_value();
    let _ = generic("k", &[1, 2, 3]);
    let _ = impl_trait("l", 3).clone().count();
    let _ = unsafe { raw(&7) };
    let _ = moves("a".into(), "b".into());
    let _ = pattern("m", ("Jane", "Doe"), Vec::new());
    drop(returns_future(1));
    r#type();
}

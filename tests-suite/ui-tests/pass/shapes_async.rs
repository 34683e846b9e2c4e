//! Async shapes: free functions, methods, async fns in traits.

use phi_audit::audited;

#[derive(Debug)]
pub struct NotFound;

impl std::fmt::Display for NotFound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not found")
    }
}

async fn fetch(id: u64) -> Result<String, NotFound> {
    if id == 0 {
        Err(NotFound)
    } else {
        Ok(format!("record {id}"))
    }
}

#[audited(action = "READ", resource = "Patient", id = id, metadata(page = page))]
pub async fn free(id: u64, page: u32) -> Result<String, NotFound> {
    if page > 100 {
        return Err(NotFound); // early return
    }
    let r = fetch(id).await?;
    phi_audit::record!(len = r.len());
    Ok(r)
}

#[audited(action = "READ", resource = "Patient")]
pub async fn unit() {}

pub struct Service {
    name: String,
    hits: u32,
}

impl Service {
    #[audited(action = "READ", resource = "Service", id = self.name)]
    pub async fn by_ref(&self) -> usize {
        self.name.len()
    }

    #[audited(action = "UPDATE", resource = "Service", id = self.name)]
    pub async fn by_mut(&mut self) -> &mut u32 {
        self.hits += 1;
        &mut self.hits
    }

    #[audited(action = "DELETE", resource = "Service", id = self.name)]
    pub async fn by_value(self) -> String {
        self.name
    }

    #[audited(action = "CREATE", resource = "Service")]
    pub async fn create<T: Into<String> + Send>(name: T) -> Self {
        Service { name: name.into(), hits: 0 }
    }
}

trait Repo {
    async fn load(&self, id: u64) -> Result<String, NotFound>;

    /// A default method in the trait itself.
    #[audited(action = "READ", resource = "Repo", id = id)]
    async fn load_default(&self, id: u64) -> Result<String, NotFound> {
        fetch(id).await
    }
}

impl Repo for Service {
    #[audited(action = "READ", resource = "Repo", id = id)]
    async fn load(&self, id: u64) -> Result<String, NotFound> {
        fetch(id).await
    }
}

/// `#[phi]` arguments moved into the body of an async fn.
#[audited(action = "UPDATE", resource = "Patient", id = patient_id)]
pub async fn rename(patient_id: String, #[phi] new_name: String) -> usize {
    let owned = new_name;
    owned.len() + patient_id.len()
}

/// `impl Trait` returns, plain and inside a `Result` with `?`.
#[audited(action = "READ", resource = "Patient")]
pub async fn impl_return(id: u64) -> impl std::fmt::Display {
    id
}

#[audited(action = "READ", resource = "Patient")]
pub async fn impl_in_result(id: u64) -> Result<impl std::fmt::Display, Box<dyn std::error::Error + Send + Sync>> {
    let r = fetch(id).await.map_err(|e| e.to_string())?;
    Ok(r)
}

fn assert_send<T: Send>(_: T) {}

fn main() {
    assert_send(free(1, 2));
    assert_send(unit());
    assert_send(impl_return(1));
    assert_send(impl_in_result(1));
    let s = Service { name: "a".into(), hits: 0 };
    assert_send(s.by_ref());
    assert_send(s.load(1));
    assert_send(Service::create("x"));
    assert_send(rename("p".into(), "Jane".into()));
    let mut s2 = Service { name: "b".into(), hits: 0 };
    drop(s2.by_mut());
    drop(s.load_default(1));
    drop(s.by_value());
}

use plume::{Params, Result};

#[derive(Default)]
struct Todos;

#[plume::service(path = "todos", paht = "todos", path = "again", events = ["a", "a"])]
impl Todos {
    async fn find(&self, _params: Params) -> Result<Vec<u32>> {
        Ok(Vec::new())
    }
}

fn main() {}

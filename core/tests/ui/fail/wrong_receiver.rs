use plume::{Params, Result};

#[derive(Default)]
struct Todos;

#[plume::service]
impl Todos {
    async fn find(self, _params: Params) -> Result<Vec<u32>> {
        Ok(Vec::new())
    }

    async fn get(&mut self, _id: u32) -> Result<u32> {
        Ok(1)
    }

    async fn create(data: u32) -> Result<u32> {
        Ok(data)
    }
}

fn main() {}

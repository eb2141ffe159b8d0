use plume::{Params, Result};

#[derive(Default)]
struct Todos;

#[plume::service]
impl Todos {
    async fn get(&self, _params: Params) -> Result<u32> {
        Ok(1)
    }

    async fn update(&self, _id: u32, _data: u32, _extra: u32, _params: Params) -> Result<u32> {
        Ok(1)
    }

    #[method]
    async fn archive(&self) -> u32 {
        1
    }
}

fn main() {}

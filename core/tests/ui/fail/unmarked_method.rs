use plume::{Params, Result};

#[derive(Default)]
struct Todos;

#[plume::service]
impl Todos {
    async fn find(&self, _params: Params) -> Result<Vec<u32>> {
        Ok(self.helper())
    }

    fn helper(&self) -> Vec<u32> {
        Vec::new()
    }

    #[method]
    async fn get(&self, _id: u32) -> Result<u32> {
        Ok(1)
    }
}

fn main() {}

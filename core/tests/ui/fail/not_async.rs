use plume::{Params, Result};

#[derive(Default)]
struct Todos;

#[plume::service]
impl Todos {
    fn find(&self, _params: Params) -> Result<Vec<u32>> {
        Ok(Vec::new())
    }

    #[method]
    fn archive(&self, _data: u32) -> Result<()> {
        Ok(())
    }
}

fn main() {}

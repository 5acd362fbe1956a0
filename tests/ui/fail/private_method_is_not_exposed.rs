use do_runtime::{durable_object, Ctx, Runtime};

pub struct Vault;

#[durable_object]
impl Vault {
    pub fn new(_ctx: Ctx) -> Self { Vault }
    pub async fn open(&self) -> bool { self.secret().await == 42 }
    async fn secret(&self) -> u32 { 42 }
}

fn main() {
    let rt = Runtime::builder().data_dir("unused").register::<Vault>().build().unwrap();
    let vault = rt.namespace::<Vault>().get_by_name("v");
    let _ = vault.secret();
}

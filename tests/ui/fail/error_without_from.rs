use do_runtime::{durable_object, Ctx};

#[derive(serde::Serialize, serde::Deserialize)]
pub enum BankError { Insufficient }

pub struct Bank;

#[durable_object]
impl Bank {
    pub fn new(_ctx: Ctx) -> Self { Bank }
    pub async fn withdraw(&self, amount: u64) -> Result<u64, BankError> {
        if amount > 10 { Err(BankError::Insufficient) } else { Ok(10 - amount) }
    }
}

fn main() {}

//! Everything the macro accepts, in one class.

use std::cell::Cell;

use do_runtime::{durable_object, Ctx, Error, Runtime};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum ShopError {
    SoldOut { item: String },
    Runtime(String),
}

impl From<Error> for ShopError {
    fn from(e: Error) -> Self {
        ShopError::Runtime(e.to_string())
    }
}

/// A shop: several arguments, unit results, user errors, docs, cfgs.
pub struct Shop {
    ctx: Ctx,
    sold: Cell<u32>,
}

#[durable_object(name = "Store")]
impl Shop {
    /// Used by methods; not part of the wire.
    pub const LIMIT: u32 = 3;

    pub fn new(ctx: Ctx) -> Self {
        Shop { ctx, sold: Cell::new(0) }
    }

    /// Sells `count` of `item` at `price` each; a doc comment that must reach the stub.
    pub async fn sell(&self, item: String, count: u32, price: u64) -> Result<u64, ShopError> {
        if self.over_limit(count) {
            return Err(ShopError::SoldOut { item });
        }
        self.sold.set(self.sold.get() + count);
        Ok(u64::from(count) * price)
    }

    /// Unit result.
    pub async fn restock(&self) {
        self.sold.set(0);
    }

    /// Infallible result with a runtime error type alias.
    pub async fn sold(&self) -> u32 {
        self.sold.get()
    }

    /// A result typed with the runtime's own error.
    pub async fn id_text(&self) -> do_runtime::Result<String> {
        Ok(self.ctx.id().to_string())
    }

    #[cfg(test)]
    pub async fn only_in_tests(&self) -> u32 {
        1
    }

    #[cfg(not(test))]
    pub async fn only_outside_tests(&self) -> u32 {
        2
    }

    fn over_limit(&self, count: u32) -> bool {
        self.sold.get() + count > Self::LIMIT
    }

    #[allow(dead_code)]
    pub(crate) async fn crate_only(&self) -> u32 {
        0
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("do-ui-pass-{}", std::process::id()));
    let rt = Runtime::builder().data_dir(&dir).register::<Shop>().build().expect("builds");
    let shop = rt.namespace::<Shop>().get_by_name("corner");
    assert_eq!(shop.name(), Some("corner"));
    let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    tokio.block_on(async {
        let total: Result<u64, ShopError> = shop.sell("apple".into(), 2, 30).await;
        assert_eq!(total.expect("sold"), 60);
        assert!(matches!(shop.sell("pear".into(), 5, 1).await, Err(ShopError::SoldOut { .. })));
        let sold: Result<u32, Error> = shop.sold().await;
        assert_eq!(sold.expect("sold"), 2);
        shop.restock().await.expect("restocked");
        assert_eq!(shop.only_outside_tests().await.expect("called"), 2);
        assert_eq!(shop.id_text().await.expect("id").len(), 64);
    });
    assert_eq!(<Shop as do_runtime::DurableObject>::CLASS, "Store");
    drop(rt);
    let _ = std::fs::remove_dir_all(dir);
}

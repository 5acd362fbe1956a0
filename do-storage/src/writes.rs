//! An object's buffered writes, by key, with one write held inline.

use std::collections::BTreeMap;
use std::ops::{Bound, RangeBounds};

use fjall::Slice;

/// Buffered writes by key (`None`: a delete), iterated in key order.
///
/// Most batches under load are one object rewriting one key. A `BTreeMap`
/// allocates a ~550-byte node for its first entry, and the worker freed it
/// when the batch was applied, a millisecond or more later, reading it back
/// from memory to drop its entry. One write is held inline instead.
#[derive(Debug, Default)]
pub(crate) enum Writes {
    #[default]
    Empty,
    One(Slice, Option<Slice>),
    Many(BTreeMap<Slice, Option<Slice>>),
}

/// One of two iterators of the same items.
pub(crate) enum Either<A, B> {
    A(A),
    B(B),
}

impl<A: Iterator, B: Iterator<Item = A::Item>> Iterator for Either<A, B> {
    type Item = A::Item;

    fn next(&mut self) -> Option<A::Item> {
        match self {
            Either::A(a) => a.next(),
            Either::B(b) => b.next(),
        }
    }
}

impl Writes {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        match self {
            Writes::Empty => 0,
            Writes::One(..) => 1,
            Writes::Many(map) => map.len(),
        }
    }

    /// The write buffered for `key`, if any.
    pub fn get(&self, key: &[u8]) -> Option<&Option<Slice>> {
        match self {
            Writes::Empty => None,
            Writes::One(k, v) => (**k == *key).then_some(v),
            Writes::Many(map) => map.get(key),
        }
    }

    /// Buffers a write, replacing any earlier one of `key`.
    pub fn insert(&mut self, key: Slice, value: Option<Slice>) {
        match self {
            Writes::Empty => *self = Writes::One(key, value),
            Writes::One(k, v) if *k == key => *v = value,
            Writes::One(..) => {
                let mut map = BTreeMap::new();
                if let Writes::One(k, v) = std::mem::take(self) {
                    map.insert(k, v);
                }
                map.insert(key, value);
                *self = Writes::Many(map);
            }
            Writes::Many(map) => {
                map.insert(key, value);
            }
        }
    }

    pub fn clear(&mut self) {
        *self = Writes::Empty;
    }

    /// The writes in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&Slice, &Option<Slice>)> {
        match self {
            Writes::Empty => Either::A(None.into_iter()),
            Writes::One(k, v) => Either::A(Some((k, v)).into_iter()),
            Writes::Many(map) => Either::B(map.iter()),
        }
    }

    /// The writes of keys within `bounds`, in key order.
    pub fn range<'a>(
        &'a self,
        bounds: (Bound<&[u8]>, Bound<&[u8]>),
    ) -> impl Iterator<Item = (&'a Slice, &'a Option<Slice>)> {
        match self {
            Writes::Empty => Either::A(None.into_iter()),
            Writes::One(k, v) => {
                let within = RangeBounds::<[u8]>::contains(&bounds, &**k);
                Either::A(within.then_some((k, v)).into_iter())
            }
            Writes::Many(map) => Either::B(map.range::<[u8], _>(bounds)),
        }
    }

    pub fn values(&self) -> impl Iterator<Item = &Option<Slice>> {
        self.iter().map(|(_, v)| v)
    }
}

impl IntoIterator for Writes {
    type Item = (Slice, Option<Slice>);
    type IntoIter = Either<
        std::option::IntoIter<(Slice, Option<Slice>)>,
        std::collections::btree_map::IntoIter<Slice, Option<Slice>>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Writes::Empty => Either::A(None.into_iter()),
            Writes::One(k, v) => Either::A(Some((k, v)).into_iter()),
            Writes::Many(map) => Either::B(map.into_iter()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Bounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

    fn s(text: &str) -> Slice {
        Slice::from(text.as_bytes())
    }

    /// The same writes in a `BTreeMap`, as the reference.
    fn both(writes: &[(&str, Option<&str>)]) -> (Writes, BTreeMap<Slice, Option<Slice>>) {
        let (mut ours, mut reference) = (Writes::default(), BTreeMap::new());
        for (k, v) in writes {
            ours.insert(s(k), v.map(s));
            reference.insert(s(k), v.map(s));
        }
        (ours, reference)
    }

    #[test]
    fn one_write_is_held_inline_and_every_lookup_and_order_matches_a_btree_map() {
        let cases: [&[(&str, Option<&str>)]; 5] = [
            &[],
            &[("k", Some("1"))],
            &[("k", Some("1")), ("k", None), ("k", Some("3"))],
            &[("b", Some("1")), ("a", None)],
            &[
                ("c", Some("1")),
                ("a", Some("2")),
                ("b", None),
                ("a", Some("4")),
            ],
        ];
        for case in cases {
            let (ours, reference) = both(case);
            if reference.len() == 1 {
                assert!(matches!(ours, Writes::One(..)), "{case:?}");
            }
            assert_eq!(ours.len(), reference.len());
            assert_eq!(ours.is_empty(), reference.is_empty());
            for key in ["a", "b", "c", "k", "z"] {
                assert_eq!(ours.get(key.as_bytes()), reference.get(key.as_bytes()));
            }
            let bounds: [Bounds; 4] = [
                (Bound::Unbounded, Bound::Unbounded),
                (Bound::Included(b"b"), Bound::Unbounded),
                (Bound::Excluded(b"a"), Bound::Excluded(b"k")),
                (Bound::Unbounded, Bound::Included(b"a")),
            ];
            for range in bounds {
                assert!(
                    ours.range(range).eq(reference.range::<[u8], _>(range)),
                    "{case:?} {range:?}"
                );
            }
            assert!(ours.iter().eq(reference.iter()));
            assert!(ours.into_iter().eq(reference));
        }
    }
}

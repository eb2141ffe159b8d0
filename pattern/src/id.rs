//! [`Id`]: a trace or span id, kept inline when it is short (the 22 characters of a Plume id),
//! so that reading one from a request or making a fresh one allocates nothing.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest id kept inline: a Plume id ([`crate::envelope::new_id`]) is 22 characters.
const INLINE: usize = 22;

/// A trace or span id ([`Req::trace_id`](crate::Req::trace_id),
/// [`Req::span_id`](crate::Req::span_id)): a string, read as `&str` ([`as_str`](Self::as_str),
/// or through `Deref`), compared with `str` and `String`, serialized as a string.
///
/// Ids of up to 22 bytes (Plume's own) are kept inline, longer ones (some Hemera nodes') on the
/// heap; either way it is 24 bytes, as a `String` is.
#[derive(Clone)]
pub struct Id(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl Id {
    /// The id `s`.
    pub fn new(s: &str) -> Id {
        match u8::try_from(s.len()) {
            Ok(len) if s.len() <= INLINE => {
                let mut bytes = [0u8; INLINE];
                bytes[..s.len()].copy_from_slice(s.as_bytes());
                Id(Repr::Inline { len, bytes })
            }
            _ => Id(Repr::Heap(s.into())),
        }
    }

    /// A fresh random id ([`crate::envelope::new_id`]), made without an allocation.
    pub(crate) fn fresh() -> Id {
        let bytes = crate::envelope::new_id_bytes();
        Id(Repr::Inline {
            len: INLINE as u8,
            bytes,
        })
    }

    /// The id's bytes (UTF-8), without the check [`as_str`](Self::as_str) makes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            Repr::Heap(s) => s.as_bytes(),
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                // Made from a `&str` (or ASCII digits): the check always passes.
                std::str::from_utf8(bytes.get(..usize::from(*len)).unwrap_or_default())
                    .unwrap_or_default()
            }
            Repr::Heap(s) => s,
        }
    }
}

impl Default for Id {
    /// The empty id (what a request without one gives).
    fn default() -> Id {
        Id(Repr::Inline {
            len: 0,
            bytes: [0; INLINE],
        })
    }
}

impl Deref for Id {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Id {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Id) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Id {}

impl Hash for Id {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialEq<str> for Id {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Id {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Id {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<Id> for str {
    fn eq(&self, other: &Id) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Id> for &str {
    fn eq(&self, other: &Id) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Id> for String {
    fn eq(&self, other: &Id) -> bool {
        self == other.as_str()
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Id {
        Id::new(s)
    }
}

impl From<String> for Id {
    fn from(s: String) -> Id {
        if s.len() <= INLINE {
            Id::new(&s)
        } else {
            Id(Repr::Heap(s.into_boxed_str()))
        }
    }
}

impl From<Id> for String {
    fn from(id: Id) -> String {
        match id.0 {
            Repr::Heap(s) => s.into_string(),
            inline @ Repr::Inline { .. } => Id(inline).as_str().to_owned(),
        }
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        String::deserialize(d).map(Id::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_id_is_as_large_as_a_string() {
        assert_eq!(std::mem::size_of::<Id>(), std::mem::size_of::<String>());
    }

    #[test]
    fn fresh_ids_are_inline_and_distinct() {
        let (a, b) = (Id::fresh(), Id::fresh());
        assert_eq!(a.len(), 22);
        assert!(matches!(a.0, Repr::Inline { .. }));
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
    }

    proptest! {
        /// Whatever the string (short or long, any characters), the id reads back as it, by
        /// every way in, compares and hashes as it, and serializes as the string would.
        #[test]
        fn ids_are_their_strings(s in ".{0,40}") {
            let id = Id::new(&s);
            prop_assert_eq!(id.as_str(), s.as_str());
            prop_assert_eq!(&*Id::from(s.clone()), s.as_str());
            prop_assert_eq!(String::from(id.clone()), s.clone());
            prop_assert!(id == s, "Id == String");
            prop_assert!(s == id, "String == Id");
            prop_assert!(id == *s.as_str(), "Id == str");
            prop_assert!(s.as_str() == id, "&str == Id");
            prop_assert_eq!(matches!(id.0, Repr::Inline { .. }), s.len() <= INLINE);
            prop_assert_eq!(format!("{id}|{id:?}"), format!("{s}|{s:?}"));
            let hash = |h: &dyn Fn(&mut std::collections::hash_map::DefaultHasher)| {
                let mut st = std::collections::hash_map::DefaultHasher::new();
                h(&mut st);
                st.finish()
            };
            prop_assert_eq!(hash(&|st| id.hash(st)), hash(&|st| s.as_str().hash(st)));
            let json = serde_json::to_string(&id).expect("encodes");
            prop_assert_eq!(&json, &serde_json::to_string(&s).expect("encodes"));
            prop_assert_eq!(serde_json::from_str::<Id>(&json).expect("decodes"), id.clone());
            let packed = rmp_serde::to_vec(&id).expect("encodes");
            prop_assert_eq!(&packed, &rmp_serde::to_vec(&s).expect("encodes"));
            prop_assert_eq!(rmp_serde::from_slice::<Id>(&packed).expect("decodes"), id);
        }
    }
}

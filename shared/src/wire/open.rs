//! What lets a reader of this version live beside a writer of the next one
//! (a rolling upgrade): record versions, unknown fields kept as they came,
//! and enums open to values this version does not know.
//!
//! - Every stored record carries `v` ([`Version`]); a record written before
//!   versions existed reads as version 1. A record whose `v` is newer than
//!   [`Version::CURRENT`] is one this build may not understand: it is
//!   never written back (see `nova_shared::arbitrate::beyond_this_version`).
//! - Records that are read, changed and written back keep the fields they
//!   do not know in an [`Extra`] map (`#[serde(flatten)]`) and write them
//!   back unchanged.
//! - Wire enums decode a value they do not know into their `Unknown` variant,
//!   with the value as sent, so it can be shown, kept and written back; code
//!   that must act on such a value does not act (the arbiter defers).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Fields of a record this version does not know, kept as they were read
/// and written back as they were (MessagePack values, so binary, ext and
/// integer types survive a round trip).
pub type Extra = BTreeMap<String, rmpv::Value>;

/// The version of a stored record's shape and meaning (`v` on the wire).
///
/// A newer build bumps it only when older readers must not act on, or write
/// back, what it writes; a field or an enum value that older readers may
/// ignore or keep is added without a bump (README: "Rolling upgrades").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Version(pub u16);

#[cfg(feature = "schema")]
impl schemars::JsonSchema for Version {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Version".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "integer",
            "minimum": 1,
            "maximum": u16::MAX,
        })
    }
}

impl Version {
    /// The version this build writes and fully understands.
    pub const CURRENT: Version = Version(1);

    /// The version of a record written before records had one: 1, whatever
    /// this build's current version is.
    pub fn unversioned() -> Version {
        Version(1)
    }

    /// Whether this build understands records of this version.
    pub fn is_understood(self) -> bool {
        self <= Version::CURRENT
    }
}

impl Default for Version {
    /// What a new record gets: the current version.
    fn default() -> Self {
        Version::CURRENT
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// Only the version of a record: what a reader can still learn of a record
/// it cannot decode (a newer version that changed a field's type), to tell
/// "written by a newer version, leave it alone" from "corrupt".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct VersionProbe {
    /// The record's version (1 when absent).
    #[serde(default = "Version::unversioned")]
    pub v: Version,
}

/// Defines a wire enum of names (`"scale"`, `"at_max"`) that decodes a name
/// it does not know into `Unknown(name)` and encodes it back as it came.
/// Its JSON Schema lists the names this version writes.
macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal, )+
        }
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this version does not know (written by a newer
            /// one), kept as it was sent.
            Unknown(String),
        }

        impl $name {
            /// The names this version knows, in declaration order.
            pub const KNOWN: &'static [&'static str] = &[$($wire),+];

            /// The wire name (an unknown value's own).
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $wire, )+
                    $name::Unknown(name) => name,
                }
            }

            /// The value of a wire name; a name this version does not know
            /// is `Unknown`.
            pub fn from_wire(name: &str) -> Self {
                match name {
                    $( $wire => $name::$variant, )+
                    other => $name::Unknown(other.to_string()),
                }
            }

            /// Whether this version knows the value.
            pub fn is_known(&self) -> bool {
                !matches!(self, $name::Unknown(_))
            }

            /// The wire name as a metric label: `unknown` for every value
            /// this version does not know, so labels stay bounded.
            pub fn label(&self) -> &'static str {
                match self {
                    $( $name::$variant => $wire, )+
                    $name::Unknown(_) => "unknown",
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer
                    .deserialize_str($crate::wire::open::NameVisitor(stringify!($name)))
                    .map(|name| $name::from_wire(&name))
            }
        }

        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                $crate::wire::open::names_schema(Self::KNOWN)
            }
        }
    };
}

pub(crate) use open_enum;

/// Reads a name (a string) for an open enum.
pub(crate) struct NameVisitor(pub &'static str);

impl serde::de::Visitor<'_> for NameVisitor {
    type Value = String;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a {} name (a string)", self.0)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<String, E> {
        // rmp_serde hands out a string with invalid UTF-8 as bytes.
        std::str::from_utf8(v)
            .map(str::to_string)
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Bytes(v), &self))
    }
}

/// The schema of an open enum: the names this version writes. Readers take
/// others too (a newer writer's), but a message of this version has one of
/// these.
#[cfg(feature = "schema")]
pub(crate) fn names_schema(known: &[&str]) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": known,
    })
}

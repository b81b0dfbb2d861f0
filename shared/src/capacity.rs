//! Request-unit arithmetic by DynamoDB's documented sizing rules. moto answers 1.0 for every
//! ConsumedCapacity, so cost tracking computes units from item sizes here instead.
//!
//! Item size = for each attribute, the UTF-8 length of its name plus the size of its value:
//! strings by UTF-8 length, binary by byte length, numbers 1 byte per two significant digits
//! plus 1, booleans and null 1 byte, lists and maps 3 bytes plus 1 byte per element plus their
//! contents (map keys count like attribute names), sets the sum of their elements.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;

/// Size in bytes of one attribute value.
pub fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(items) => 3 + items.iter().map(|i| value_size(i) + 1).sum::<usize>(),
        AttributeValue::M(m) => 3 + m.iter().map(|(k, v)| k.len() + value_size(v) + 1).sum::<usize>(),
        AttributeValue::Ss(ss) => ss.iter().map(String::len).sum(),
        AttributeValue::Ns(ns) => ns.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(bs) => bs.iter().map(|b| b.as_ref().len()).sum(),
        _ => 0,
    }
}

fn number_size(n: &str) -> usize {
    let digits: String = n.chars().filter(char::is_ascii_digit).collect();
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len().max(1);
    significant.div_ceil(2) + 1
}

/// Size in bytes of a whole item.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// Write request units for putting or deleting an item of `size` bytes: one per started KB.
pub fn write_units(size: usize) -> u64 {
    (size.max(1) as u64).div_ceil(1024)
}

/// Read request units for reading `size` bytes, in tenths so eventual reads stay integral.
/// A strongly consistent read is one unit per started 4 KB; an eventually consistent one half.
pub fn read_units_tenths(size: usize, strongly_consistent: bool) -> u64 {
    let units = (size.max(1) as u64).div_ceil(4096) * 10;
    if strongly_consistent {
        units
    } else {
        units / 2
    }
}

/// Write units for a transactional write: twice the plain cost.
pub fn transactional_write_units(size: usize) -> u64 {
    2 * write_units(size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::primitives::Blob;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    #[test]
    fn sizes_follow_the_documented_rules() {
        assert_eq!(value_size(&s("héllo")), 6);
        assert_eq!(value_size(&AttributeValue::N("12345".into())), 4);
        assert_eq!(value_size(&AttributeValue::N("1000".into())), 2);
        assert_eq!(value_size(&AttributeValue::N("-0.00120".into())), 2);
        assert_eq!(value_size(&AttributeValue::B(Blob::new(vec![0; 10]))), 10);
        assert_eq!(value_size(&AttributeValue::Bool(true)), 1);
        assert_eq!(value_size(&AttributeValue::L(vec![s("ab"), s("c")])), 3 + 3 + 2);
        let m = HashMap::from([("k".to_string(), s("vv"))]);
        assert_eq!(value_size(&AttributeValue::M(m)), 3 + 1 + 2 + 1);
        let item =
            HashMap::from([("PK".to_string(), s("SUB#a#000")), ("n".to_string(), AttributeValue::N("7".into()))]);
        assert_eq!(item_size(&item), 2 + 9 + 1 + 2);
    }

    #[test]
    fn units_round_up_per_started_block() {
        assert_eq!(write_units(0), 1);
        assert_eq!(write_units(1024), 1);
        assert_eq!(write_units(1025), 2);
        assert_eq!(transactional_write_units(1025), 4);
        assert_eq!(read_units_tenths(4096, true), 10);
        assert_eq!(read_units_tenths(4097, true), 20);
        assert_eq!(read_units_tenths(4097, false), 10);
        assert_eq!(read_units_tenths(100, false), 5);
    }
}

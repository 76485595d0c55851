//! Filter expressions over attributes and `id`, Milvus style:
//!
//! ```text
//! year >= 2020 and (genre in ['sf', 'fantasy'] or not published)
//! title like 'intro%' and array_contains(tags, 'rust') and id != 7
//! ```
//!
//! Operators: `== != < <= > >=`, `in [..]`, `not in [..]`, `like` (`%` any
//! run, `_` one character), `array_contains(list, value)`, `and`/`&&`,
//! `or`/`||`, `not`/`!`, parentheses. A bare bool attribute is a predicate.
//! A comparison with a null attribute is false (so `not (x == 1)` holds for
//! a null `x`, while `x != 1` does not). Errors give the byte position.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Float64Type, Int64Type, UInt64Type};

use crate::catalog::{AttributeType, CollectionConfig, IdType};
use crate::error::{Error, Result};

/// Longest filter accepted, in bytes.
pub(crate) const MAX_FILTER_BYTES: usize = 16 * 1024;
const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Int(i64),
    Float(f64),
    Str(String),
    Op(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A parsed and type-checked filter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Cmp {
        column: String,
        op: CmpOp,
        value: Literal,
    },
    In {
        column: String,
        values: Vec<Literal>,
        negated: bool,
    },
    Like {
        column: String,
        pattern: String,
    },
    ArrayContains {
        column: String,
        value: String,
    },
    IsTrue {
        column: String,
    },
}

fn fail<T>(pos: usize, message: impl std::fmt::Display) -> Result<T> {
    Err(Error::invalid(
        "filter",
        format!("at position {pos}: {message}"),
    ))
}

fn tokenize(text: &str) -> Result<Vec<(usize, Tok)>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push((start, Tok::Ident(text[start..i].to_string())));
            continue;
        }
        if c.is_ascii_digit()
            || (c == b'-'
                && bytes
                    .get(i + 1)
                    .is_some_and(|b| b.is_ascii_digit() || *b == b'.'))
            || c == b'.'
        {
            i += 1;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric()
                    || bytes[i] == b'.'
                    || ((bytes[i] == b'-' || bytes[i] == b'+')
                        && matches!(bytes[i - 1], b'e' | b'E')))
            {
                i += 1;
            }
            let s = &text[start..i];
            let tok = if s.contains(['.', 'e', 'E']) {
                match s.parse::<f64>() {
                    Ok(v) if v.is_finite() => Tok::Float(v),
                    _ => return fail(start, format!("bad number {s:?}")),
                }
            } else {
                match s.parse::<i64>() {
                    Ok(v) => Tok::Int(v),
                    Err(_) => return fail(start, format!("bad or out-of-range integer {s:?}")),
                }
            };
            out.push((start, tok));
            continue;
        }
        if c == b'\'' || c == b'"' {
            let mut s = String::new();
            i += 1;
            let mut chars = text[i..].char_indices();
            let mut closed = false;
            while let Some((off, ch)) = chars.next() {
                match ch {
                    '\\' => match chars.next() {
                        Some((_, e)) => s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        }),
                        None => break,
                    },
                    q if q as u32 == c as u32 => {
                        i += off + 1;
                        closed = true;
                        break;
                    }
                    other => s.push(other),
                }
            }
            if !closed {
                return fail(start, "unterminated string");
            }
            out.push((start, Tok::Str(s)));
            continue;
        }
        let two = text.get(i..i + 2).unwrap_or("");
        let op: &'static str = match two {
            "==" => "==",
            "!=" => "!=",
            "<=" => "<=",
            ">=" => ">=",
            "&&" => "&&",
            "||" => "||",
            _ => match c {
                b'<' => "<",
                b'>' => ">",
                b'(' => "(",
                b')' => ")",
                b'[' => "[",
                b']' => "]",
                b',' => ",",
                b'!' => "!",
                b'=' => return fail(start, "use '==' for equality"),
                _ => {
                    return fail(
                        start,
                        format!(
                            "unexpected character {:?}",
                            text[i..].chars().next().unwrap_or(' ')
                        ),
                    );
                }
            },
        };
        i += op.len();
        out.push((start, Tok::Op(op)));
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
    config: &'a CollectionConfig,
    depth: usize,
}

/// The type of a filterable column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ColType {
    U64,
    I64,
    F64,
    Str,
    Bool,
    StrList,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.toks.get(self.pos).map(|(p, _)| *p).unwrap_or(self.end)
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(word))
    }

    fn op(&self, op: &str) -> bool {
        matches!(self.peek(), Some(Tok::Op(o)) if *o == op)
    }

    fn expect_op(&mut self, op: &str) -> Result<()> {
        if self.op(op) {
            self.pos += 1;
            Ok(())
        } else {
            fail(self.at(), format!("expected '{op}'"))
        }
    }

    fn column(&mut self) -> Result<(String, ColType)> {
        let pos = self.at();
        let Some(Tok::Ident(name)) = self.peek().cloned() else {
            return fail(pos, "expected an attribute name");
        };
        self.pos += 1;
        let ty = if name == "id" {
            match self.config.id_type {
                IdType::U64 => ColType::U64,
                IdType::String => ColType::Str,
            }
        } else {
            match self.config.attribute(&name).map(|a| a.ty) {
                Some(AttributeType::Bool) => ColType::Bool,
                Some(AttributeType::I64) => ColType::I64,
                Some(AttributeType::F64) => ColType::F64,
                Some(AttributeType::String) => ColType::Str,
                Some(AttributeType::StringList) => ColType::StrList,
                None => return fail(pos, format!("unknown attribute {name:?}")),
            }
        };
        Ok((name, ty))
    }

    fn literal(&mut self, ty: ColType) -> Result<Literal> {
        let pos = self.at();
        let lit = match self.peek().cloned() {
            Some(Tok::Int(v)) => Literal::Int(v),
            Some(Tok::Float(v)) => Literal::Float(v),
            Some(Tok::Str(s)) => Literal::Str(s),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("false") => Literal::Bool(false),
            _ => return fail(pos, "expected a value"),
        };
        self.pos += 1;
        let ok = matches!(
            (ty, &lit),
            (ColType::U64 | ColType::I64, Literal::Int(_))
                | (ColType::F64, Literal::Int(_) | Literal::Float(_))
                | (ColType::Str | ColType::StrList, Literal::Str(_))
                | (ColType::Bool, Literal::Bool(_))
        );
        if !ok {
            return fail(
                pos,
                format!("{lit:?} does not match the attribute's type {ty:?}"),
            );
        }
        Ok(lit)
    }

    fn or(&mut self) -> Result<Filter> {
        let mut parts = vec![self.and()?];
        while self.keyword("or") || self.op("||") {
            self.pos += 1;
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Filter> {
        let mut parts = vec![self.unary()?];
        while self.keyword("and") || self.op("&&") {
            self.pos += 1;
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Filter> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return fail(self.at(), "expression nested too deeply");
        }
        let result = if self.keyword("not") || self.op("!") {
            self.pos += 1;
            Ok(Filter::Not(Box::new(self.unary()?)))
        } else {
            self.primary()
        };
        self.depth -= 1;
        result
    }

    fn primary(&mut self) -> Result<Filter> {
        if self.op("(") {
            self.pos += 1;
            let inner = self.or()?;
            self.expect_op(")")?;
            return Ok(inner);
        }
        if self.keyword("array_contains") {
            self.pos += 1;
            self.expect_op("(")?;
            let pos = self.at();
            let (column, ty) = self.column()?;
            if ty != ColType::StrList {
                return fail(
                    pos,
                    format!("array_contains needs a string_list attribute, {column:?} is {ty:?}"),
                );
            }
            self.expect_op(",")?;
            let Literal::Str(value) = self.literal(ColType::StrList)? else {
                return fail(pos, "array_contains needs a string value");
            };
            self.expect_op(")")?;
            return Ok(Filter::ArrayContains { column, value });
        }
        let col_pos = self.at();
        let (column, ty) = self.column()?;
        let op_pos = self.at();
        let cmp = match self.peek() {
            Some(Tok::Op("==")) => Some(CmpOp::Eq),
            Some(Tok::Op("!=")) => Some(CmpOp::Ne),
            Some(Tok::Op("<")) => Some(CmpOp::Lt),
            Some(Tok::Op("<=")) => Some(CmpOp::Le),
            Some(Tok::Op(">")) => Some(CmpOp::Gt),
            Some(Tok::Op(">=")) => Some(CmpOp::Ge),
            _ => None,
        };
        if ty == ColType::StrList {
            return fail(
                col_pos,
                format!("{column:?} is a string_list: use array_contains({column}, 'value')"),
            );
        }
        if let Some(op) = cmp {
            self.pos += 1;
            if ty == ColType::Bool && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
                return fail(op_pos, "bool attributes support only == and !=");
            }
            let value = self.literal(ty)?;
            return Ok(Filter::Cmp { column, op, value });
        }
        let negated = self.keyword("not");
        if negated {
            self.pos += 1;
        }
        if self.keyword("in") {
            self.pos += 1;
            self.expect_op("[")?;
            let mut values = Vec::new();
            if !self.op("]") {
                loop {
                    values.push(self.literal(ty)?);
                    if self.op(",") {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
            }
            self.expect_op("]")?;
            return Ok(Filter::In {
                column,
                values,
                negated,
            });
        }
        if negated {
            return fail(self.at(), "expected 'in' after 'not'");
        }
        if self.keyword("like") {
            self.pos += 1;
            if ty != ColType::Str {
                return fail(
                    op_pos,
                    format!("like needs a string attribute, {column:?} is {ty:?}"),
                );
            }
            let Literal::Str(pattern) = self.literal(ty)? else {
                return fail(op_pos, "like needs a string pattern");
            };
            return Ok(Filter::Like { column, pattern });
        }
        if ty == ColType::Bool {
            return Ok(Filter::IsTrue { column });
        }
        fail(op_pos, "expected a comparison, 'in', 'not in' or 'like'")
    }
}

impl Filter {
    /// Parses and type-checks `text` against the collection's attributes.
    pub(crate) fn parse(text: &str, config: &CollectionConfig) -> Result<Filter> {
        if text.len() > MAX_FILTER_BYTES {
            return Err(Error::invalid(
                "filter",
                format!("longer than {MAX_FILTER_BYTES} bytes"),
            ));
        }
        let toks = tokenize(text)?;
        if toks.is_empty() {
            return Err(Error::invalid("filter", "is empty"));
        }
        let mut p = Parser {
            toks,
            pos: 0,
            end: text.len(),
            config,
            depth: 0,
        };
        let filter = p.or()?;
        if p.pos < p.toks.len() {
            return fail(p.at(), "unexpected input after the expression");
        }
        Ok(filter)
    }

    /// The columns it reads, each once.
    pub(crate) fn columns(&self) -> Vec<&str> {
        fn walk<'a>(f: &'a Filter, out: &mut Vec<&'a str>) {
            match f {
                Filter::And(parts) | Filter::Or(parts) => parts.iter().for_each(|p| walk(p, out)),
                Filter::Not(inner) => walk(inner, out),
                Filter::Cmp { column, .. }
                | Filter::In { column, .. }
                | Filter::Like { column, .. }
                | Filter::ArrayContains { column, .. }
                | Filter::IsTrue { column } => {
                    if !out.contains(&column.as_str()) {
                        out.push(column);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out
    }

    /// Which rows of `batch` match (nulls never match a comparison).
    pub(crate) fn evaluate(&self, batch: &RecordBatch) -> Result<BooleanBuffer> {
        let n = batch.num_rows();
        Ok(match self {
            Filter::And(parts) => {
                let mut acc = BooleanBuffer::new_set(n);
                for p in parts {
                    acc = &acc & &p.evaluate(batch)?;
                }
                acc
            }
            Filter::Or(parts) => {
                let mut acc = BooleanBuffer::new_unset(n);
                for p in parts {
                    acc = &acc | &p.evaluate(batch)?;
                }
                acc
            }
            Filter::Not(inner) => !&inner.evaluate(batch)?,
            Filter::Cmp { column, op, value } => {
                let col = column_of(batch, column)?;
                if let Some(mask) = compare_column(col, *op, value)? {
                    return Ok(mask);
                }
                BooleanBuffer::collect_bool(n, |i| {
                    !col.is_null(i) && compare(col, i, value).is_some_and(|o| op.holds(o))
                })
            }
            Filter::In {
                column,
                values,
                negated,
            } => {
                let col = column_of(batch, column)?;
                BooleanBuffer::collect_bool(n, |i| {
                    !col.is_null(i)
                        && values
                            .iter()
                            .any(|v| compare(col, i, v) == Some(std::cmp::Ordering::Equal))
                            != *negated
                })
            }
            Filter::Like { column, pattern } => {
                let col = column_of(batch, column)?;
                let strings = col.as_string::<i32>();
                let pattern: Vec<char> = pattern.chars().collect();
                BooleanBuffer::collect_bool(n, |i| {
                    !col.is_null(i) && like(&strings.value(i).chars().collect::<Vec<_>>(), &pattern)
                })
            }
            Filter::ArrayContains { column, value } => {
                let col = column_of(batch, column)?;
                let lists = col.as_list::<i32>();
                BooleanBuffer::collect_bool(n, |i| {
                    if col.is_null(i) {
                        return false;
                    }
                    let items = lists.value(i);
                    let items = items.as_string::<i32>();
                    (0..items.len()).any(|j| !items.is_null(j) && items.value(j) == value)
                })
            }
            Filter::IsTrue { column } => {
                let col = column_of(batch, column)?;
                let bools = col.as_boolean();
                BooleanBuffer::collect_bool(n, |i| !col.is_null(i) && bools.value(i))
            }
        })
    }
}

impl CmpOp {
    fn holds(self, o: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => o == Equal,
            CmpOp::Ne => o != Equal,
            CmpOp::Lt => o == Less,
            CmpOp::Le => o != Greater,
            CmpOp::Gt => o == Greater,
            CmpOp::Ge => o != Less,
        }
    }
}

fn column_of<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b dyn Array> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| Error::invalid("filter", format!("no column {name:?} to filter on")))
}

/// `col op lit` for every row at once with Arrow's comparison kernels, for
/// integer and string columns (nulls are false); `None` for the other
/// cases, which [`compare`] handles row by row (floats among them: the
/// kernels order NaN, a comparison with NaN must be false).
fn compare_column(col: &dyn Array, op: CmpOp, lit: &Literal) -> Result<Option<BooleanBuffer>> {
    use arrow::array::{Datum, Int64Array, Scalar, StringArray, UInt64Array};
    use arrow::compute::kernels::cmp;
    let scalar: Box<dyn Datum> = match (col.data_type(), lit) {
        (DataType::UInt64, Literal::Int(v)) if *v >= 0 => {
            Box::new(Scalar::new(UInt64Array::from(vec![*v as u64])))
        }
        (DataType::Int64, Literal::Int(v)) => Box::new(Scalar::new(Int64Array::from(vec![*v]))),
        (DataType::Utf8, Literal::Str(v)) => {
            Box::new(Scalar::new(StringArray::from(vec![v.as_str()])))
        }
        _ => return Ok(None),
    };
    let rhs = scalar.as_ref();
    let out = match op {
        CmpOp::Eq => cmp::eq(&col, rhs),
        CmpOp::Ne => cmp::neq(&col, rhs),
        CmpOp::Lt => cmp::lt(&col, rhs),
        CmpOp::Le => cmp::lt_eq(&col, rhs),
        CmpOp::Gt => cmp::gt(&col, rhs),
        CmpOp::Ge => cmp::gt_eq(&col, rhs),
    }?;
    // A null compares false.
    Ok(Some(match out.nulls() {
        Some(nulls) => out.values() & nulls.inner(),
        None => out.values().clone(),
    }))
}

/// Orders `col[i]` against `lit`; `None` when they cannot be compared.
pub(crate) fn compare(col: &dyn Array, i: usize, lit: &Literal) -> Option<std::cmp::Ordering> {
    match (col.data_type(), lit) {
        (DataType::UInt64, Literal::Int(v)) => {
            Some((col.as_primitive::<UInt64Type>().value(i) as i128).cmp(&(*v as i128)))
        }
        (DataType::Int64, Literal::Int(v)) => Some(col.as_primitive::<Int64Type>().value(i).cmp(v)),
        (DataType::Float64, Literal::Int(v)) => col
            .as_primitive::<Float64Type>()
            .value(i)
            .partial_cmp(&(*v as f64)),
        (DataType::Float64, Literal::Float(v)) => {
            col.as_primitive::<Float64Type>().value(i).partial_cmp(v)
        }
        (DataType::Utf8, Literal::Str(s)) => Some(col.as_string::<i32>().value(i).cmp(s.as_str())),
        (DataType::Boolean, Literal::Bool(b)) => Some(col.as_boolean().value(i).cmp(b)),
        _ => None,
    }
}

/// SQL `like`: `%` matches any run of characters, `_` exactly one.
fn like(text: &[char], pattern: &[char]) -> bool {
    // Iterative wildcard matching with backtracking to the last '%'.
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '_' || pattern[p] == text[t]) {
            t += 1;
            p += 1;
        } else if p < pattern.len() && pattern[p] == '%' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '%')
}

#[cfg(test)]
mod tests {
    use super::*;
    fn config() -> CollectionConfig {
        CollectionConfig::for_tests(&[
            ("year", AttributeType::I64),
            ("score", AttributeType::F64),
            ("title", AttributeType::String),
            ("tags", AttributeType::StringList),
            ("published", AttributeType::Bool),
        ])
    }

    #[test]
    fn parses_precedence_and_forms() {
        let c = config();
        let f = Filter::parse(
            "year >= 2020 and (title like 'a%' or not published) || id in [1, 2]",
            &c,
        )
        .unwrap();
        assert!(matches!(f, Filter::Or(ref parts) if parts.len() == 2));
        for ok in [
            "year == 1",
            "score < 1.5",
            "score > -3",
            "title != \"x\"",
            "published",
            "!published",
            "published == false",
            "id not in []",
            "array_contains(tags, 'rust')",
            "NOT (year < 0) AND score >= 1e3",
        ] {
            Filter::parse(ok, &c).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn errors_point_at_the_position() {
        let c = config();
        for (text, pos) in [
            ("year = 1", 5),
            ("year == 'x'", 8),
            ("nope == 1", 0),
            ("year == 1 and", 13),
            ("(year == 1", 10),
            ("title like 3", 11),
            ("tags == 'a'", 0),
            ("year == 1 1", 10),
            ("title == 'open", 9),
            ("published < true", 10),
            ("id == 99999999999999999999", 6),
        ] {
            let err = Filter::parse(text, &c).unwrap_err().to_string();
            assert!(
                err.contains(&format!("at position {pos}:")),
                "{text}: {err}"
            );
            assert!(err.starts_with("invalid filter:"), "{err}");
        }
        assert!(Filter::parse("", &c).is_err());
        let deep = format!("{}year == 1", "not ".repeat(100));
        assert!(
            Filter::parse(&deep, &c)
                .unwrap_err()
                .to_string()
                .contains("deeply")
        );
    }

    #[test]
    fn like_matches_sql_wildcards() {
        let m = |t: &str, p: &str| {
            like(
                &t.chars().collect::<Vec<_>>(),
                &p.chars().collect::<Vec<_>>(),
            )
        };
        assert!(m("intro to rust", "intro%"));
        assert!(m("intro", "intro%"));
        assert!(!m("an intro", "intro%"));
        assert!(m("an intro", "%intro"));
        assert!(m("abc", "a_c"));
        assert!(m("aXbXc", "a%b%c"));
        assert!(!m("abc", "a_"));
        assert!(m("", "%"));
    }
}

//! Table tests of the parser: valid queries and their canonical print,
//! invalid queries and their error messages, and a fuzz property.

use panoptes_promql_parser::{parse, Expr, ValueType};
use proptest::prelude::*;

/// (input, canonical output)
const VALID: &[(&str, &str)] = &[
    ("1", "1"),
    ("0x1F", "31"),
    ("1e3", "1000"),
    ("1000000", "1e+06"),
    ("-1", "-1"),
    ("+Inf", "+Inf"),
    ("-inF", "-Inf"),
    ("NaN", "NaN"),
    (".5", "0.5"),
    ("2.", "2"),
    ("1_000", "1000"),
    ("'a\\'b'", "\"a'b\""),
    ("`raw\\n`", "\"raw\\\\n\""),
    ("\"\\u00e9\\x41\"", "\"éA\""),
    ("foo", "foo"),
    ("foo:bar_baz", "foo:bar_baz"),
    ("foo{}", "foo"),
    (
        "foo{a=\"b\",c!=\"d\",e=~\"f.*\",g!~'h',}",
        "foo{a=\"b\", c!=\"d\", e=~\"f.*\", g!~\"h\"}",
    ),
    ("{__name__=~\"foo|bar\"}", "{__name__=~\"foo|bar\"}"),
    ("{\"metric.name\"}", "{\"metric.name\"}"),
    (
        "{\"metric.name\", \"label.x\"=\"v\"}",
        "{\"metric.name\", \"label.x\"=\"v\"}",
    ),
    ("foo[5m]", "foo[5m]"),
    ("foo[1h30m]", "foo[1h30m]"),
    ("foo[90m]", "foo[1h30m]"),
    ("foo[300]", "foo[5m]"),
    ("foo offset 5m", "foo offset 5m"),
    ("foo offset -5m", "foo offset -5m"),
    ("foo[5m] offset 1h", "foo[5m] offset 1h"),
    ("foo @ 100", "foo @ 100.000"),
    ("foo @ 3.3335", "foo @ 3.334"),
    ("foo @ -3.3e1", "foo @ -33.000"),
    ("foo{NaN='bc'}", "foo{NaN=\"bc\"}"),
    ("min", "min"),
    ("foo offset +(5)", "foo offset +(5s)"),
    ("foo[(5s)]", "foo[(5s)]"),
    (
        "{'foo\\'bar', 'a\\\\b'='c'}",
        "{\"foo'bar\", \"a\\\\b\"=\"c\"}",
    ),
    ("foo @ start()", "foo @ start()"),
    ("foo[5m] @ end() offset 1m", "foo[5m] @ end() offset 1m"),
    ("foo offset 1m @ 10", "foo @ 10.000 offset 1m"),
    ("rate(foo[5m])[1h:5m]", "rate(foo[5m])[1h:5m]"),
    ("foo[1h:]", "foo[1h:]"),
    ("foo[1h:] offset 10m", "foo[1h:] offset 10m"),
    ("1 + 2 * 3", "1 + 2 * 3"),
    ("(1 + 2) * 3", "(1 + 2) * 3"),
    ("2 ^ 3 ^ 2", "2 ^ 3 ^ 2"),
    ("-2 ^ 2", "-2 ^ 2"),
    ("a - b - c", "a - b - c"),
    ("a or b and c unless d", "a or b and c unless d"),
    ("a > bool 1", "a > bool 1"),
    ("1 == bool 1", "1 == bool 1"),
    ("a atan2 b", "a atan2 b"),
    ("a + on(x, y) b", "a + on (x, y) b"),
    (
        "a + ignoring(x) group_left(y) b",
        "a + ignoring (x) group_left (y) b",
    ),
    ("a * on() group_right b", "a * on () group_right () b"),
    ("a and on(x) b", "a and on (x) b"),
    ("a + fill(0) b", "a + fill(0) b"),
    (
        "a + fill_left(1) fill_right(2) b",
        "a + fill_left(1) fill_right(2) b",
    ),
    ("sum(foo)", "sum(foo)"),
    ("sum by (job) (foo)", "sum by (job) (foo)"),
    ("sum(foo) by (job)", "sum by (job) (foo)"),
    ("SUM without(a, b)(foo)", "sum without (a, b) (foo)"),
    ("topk(5, foo)", "topk(5, foo)"),
    ("quantile by (x) (0.9, foo)", "quantile by (x) (0.9, foo)"),
    ("count_values(\"v\", foo)", "count_values(\"v\", foo)"),
    ("limitk(2, foo)", "limitk(2, foo)"),
    ("limit_ratio(0.5, foo)", "limit_ratio(0.5, foo)"),
    ("group(foo)", "group(foo)"),
    ("stddev(foo) by (\"a.b\")", "stddev by (\"a.b\") (foo)"),
    ("rate(foo[5m])", "rate(foo[5m])"),
    (
        "label_join(foo, \"d\", \",\", \"a\", \"b\")",
        "label_join(foo, \"d\", \",\", \"a\", \"b\")",
    ),
    ("round(foo)", "round(foo)"),
    ("round(foo, 5)", "round(foo, 5)"),
    ("time()", "time()"),
    ("hour()", "hour()"),
    (
        "histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m])))",
        "histogram_quantile(0.9, sum by (le) (rate(x_bucket[5m])))",
    ),
    ("foo # a comment\n + bar", "foo + bar"),
    ("foo[5m+1m]", "foo[5m + 1m]"),
    ("foo[step()]", "foo[step()]"),
    ("foo offset (1m + 2s)", "foo offset (1m + 2s)"),
    ("foo offset 100 + 2", "foo offset 1m40s + 2"),
    ("foo[1m] anchored", "foo[1m] anchored"),
    ("foo smoothed", "foo smoothed"),
    ("info(foo, {data=~\".+\"})", "info(foo, {data=~\".+\"})"),
    ("-foo", "-foo"),
    ("- - 1", "1"),
    (
        "holt_winters(foo[5m], 0.5, 0.5)",
        "holt_winters(foo[5m], 0.5, 0.5)",
    ),
];

/// (input, expected error text)
const INVALID: &[(&str, &str)] = &[
    ("", "1:1: parse error: no expression found in input"),
    ("foo{", "1:5: parse error: unexpected end of input inside braces"),
    ("(foo", "1:5: parse error: unclosed left parenthesis"),
    (
        "-1e309",
        "1:2: parse error: error parsing number: strconv.ParseFloat: parsing \"1e309\": value out of range",
    ),
    ("foo[5m", "1:7: parse error: unclosed left bracket"),
    ("foo}", "1:4: parse error: unexpected right brace '}'"),
    ("foo]", "1:4: parse error: unexpected right bracket ']'"),
    ("{}", "1:1: parse error: vector selector must contain at least one non-empty matcher"),
    ("{a=\"\"}", "1:1: parse error: vector selector must contain at least one non-empty matcher"),
    ("foo{__name__=\"bar\"}", "1:1: parse error: metric name must not be set twice: \"foo\" or \"bar\""),
    ("rate(foo)", "1:6: parse error: expected type range vector in call to function \"rate\", got instant vector"),
    ("abs(foo[5m])", "1:5: parse error: expected type instant vector in call to function \"abs\", got range vector"),
    ("rate()", "1:6: parse error: expected 1 argument(s) in call to \"rate\", got 0"),
    ("round(a, 1, 2)", "1:14: parse error: expected at most 2 argument(s) in call to \"round\", got 3"),
    ("label_join(a)", "1:13: parse error: expected at least 3 argument(s) in call to \"label_join\", got 1"),
    ("nope(a)", "1:1: parse error: unknown function with name \"nope\""),
    ("sum(foo[5m])", "1:5: parse error: expected type instant vector in aggregation expression, got range vector"),
    ("topk(foo)", "1:5: parse error: wrong number of arguments for aggregate expression provided, expected 2, got 1"),
    ("topk(\"a\", foo)", "1:6: parse error: expected type scalar in aggregation parameter, got string"),
    ("1 > 2", "1:3: parse error: comparisons between scalars must use BOOL modifier"),
    ("a + bool b", "1:5: parse error: bool modifier can only be used on comparison operators"),
    ("1 and foo", "1:3: parse error: set operator \"and\" not allowed in binary scalar expression"),
    ("1 + on(a) foo", "1:3: parse error: vector matching only allowed between instant vectors"),
    ("a and on(x) group_left b", "1:13: parse error: no grouping allowed for \"and\" operation"),
    ("a + on(x) group_left(x) b", "1:11: parse error: label \"x\" must not occur in ON and GROUP clause at once"),
    ("foo[5m] + 1", "1:1: parse error: binary expression must contain only scalar and instant vector types"),
    ("-foo[5m]", "1:1: parse error: unary expression only allowed on expressions of type scalar or instant vector, got \"range vector\""),
    ("foo[5m][1h:]", "1:1: parse error: subquery is only allowed on instant vector, got range vector instead"),
    ("(foo)[5m]", "1:6: parse error: ranges only allowed for vector selectors"),
    ("foo offset 1m offset 2m", "1:15: parse error: offset may not be set multiple times"),
    ("foo @ 1 @ 2", "1:9: parse error: @ <timestamp> may not be set multiple times"),
    ("1 offset 1m", "1:3: parse error: offset modifier must be preceded by an instant vector selector or range vector selector or a subquery"),
    ("foo[0s]", "1:4: parse error: duration must be greater than 0 for range, got 0s"),
    ("\"abc", "1:1: parse error: unterminated quoted string"),
    ("1x", "1:1: parse error: bad number or duration syntax: \"1x\""),
    ("foo ! bar", "1:5: parse error: unexpected character after '!': expected '=' or '~'"),
    ("foo)", "1:4: parse error: unexpected right parenthesis ')'"),
    ("sum(a) by (b) by (c)", "1:15: parse error: unexpected identifier \"by\""),
    ("deriv(foo[3m] smoothed)", "1:7: parse error: smoothed modifier can only be used with: delta, increase, rate - not with deriv"),
    ("a\n+ )", "2:3: parse error: unexpected right parenthesis ')'"),
    ("a\n+ -", "2:4: parse error: unexpected end of input"),
    ("foo @ +Inf", "1:7: parse error: timestamp out of bounds for @ modifier: +Inf"),
    ("foo @ NaN", "1:7: parse error: timestamp out of bounds for @ modifier: NaN"),
];

#[test]
fn valid_queries_print_canonically() {
    for (input, want) in VALID {
        let e = parse(input).unwrap_or_else(|e| panic!("{input:?} should parse: {e}"));
        assert_eq!(e.to_string(), *want, "print of {input:?}");
        // The canonical form parses to the same print again.
        let again = parse(want).unwrap_or_else(|e| panic!("canonical {want:?} should parse: {e}"));
        assert_eq!(again.to_string(), *want, "reprint of {want:?}");
    }
}

#[test]
fn invalid_queries_report_position_and_reason() {
    for (input, want) in INVALID {
        match parse(input) {
            Ok(e) => panic!("{input:?} should fail, parsed as {e}"),
            Err(e) => assert_eq!(e.to_string(), *want, "error for {input:?}"),
        }
    }
}

#[test]
fn types_and_precedence() {
    assert_eq!(parse("foo[5m]").unwrap().value_type(), ValueType::Matrix);
    assert_eq!(parse("1 + 1").unwrap().value_type(), ValueType::Scalar);
    assert_eq!(
        parse("scalar(foo)").unwrap().value_type(),
        ValueType::Scalar
    );
    assert_eq!(parse("\"s\"").unwrap().value_type(), ValueType::String);
    // `^` is right-associative and binds tighter than unary minus.
    match parse("-a ^ b").unwrap() {
        Expr::Unary(u) => assert!(matches!(*u.expr, Expr::Binary(_))),
        other => panic!("unexpected {other:?}"),
    }
    match parse("2 ^ 3 ^ 2").unwrap() {
        Expr::Binary(b) => assert!(matches!(*b.rhs, Expr::Binary(_))),
        other => panic!("unexpected {other:?}"),
    }
    // `offset` takes a single term: the `+ 2` is an outer binary operation.
    match parse("foo offset 100 + 2").unwrap() {
        Expr::Binary(b) => assert!(matches!(*b.lhs, Expr::Vector(_))),
        other => panic!("unexpected {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,60}") {
        let _ = parse(&s);
    }

    #[test]
    fn promql_like_text_never_panics(s in "[a-z_(){}\\[\\]\"'=~!,:@+*/^%<> 0-9.emhs-]{0,60}") {
        if let Ok(e) = parse(&s) {
            // Whatever parses prints to something that parses again.
            let printed = e.to_string();
            prop_assert!(parse(&printed).is_ok(), "{s:?} printed as {printed:?}");
        }
    }
}

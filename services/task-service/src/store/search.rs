//! Free-text search over the tasks' titles and descriptions (`ListTasksRequest.query`).
//!
//! The user's text is parsed here, once, into terms as a web search reads them: words (all
//! of which must match), `"quoted phrases"`, `-excluded` words and phrases, and `word*` for
//! a prefix. The terms are then written out in each backend's own query syntax with every
//! word quoted, so nothing a user types reaches that syntax: a query is either understood
//! or refused as INVALID_ARGUMENT on `query`, never an SQL error. Parsing it ourselves,
//! rather than handing PostgreSQL the text for `websearch_to_tsquery`, also keeps the two
//! backends to the same language: that function reads `or` as an operator and has no
//! prefixes, which SQLite would not follow.
//!
//! - PostgreSQL: `to_tsquery('simple', …)` against `tasks.search`, a stored tsvector with a
//!   GIN index (`migration_search`). The `simple` configuration lower-cases words and does
//!   nothing else. `english` would stem ("plans" finds "plan") but only for English; it
//!   mangles words of other languages, and it drops stop words, so a search for "to do"
//!   finds nothing. `simple` treats every language alike, and it matches what SQLite's
//!   tokenizer does, so a query finds the same tasks on both backends; `plan*` finds the
//!   other forms of a word.
//! - SQLite: FTS5 `MATCH` on `tasks_fts`, an external-content index over the tasks' rows.
//!
//! Ranking: a title match weighs 1.0 and a description match 0.4 (PostgreSQL's default
//! weights for the A and B labels the migration puts on them), scaled to an integer key
//! (`RANK_SCALE`) for ORDER BY and the page token's cursor. The key depends on the task and
//! the query only: PostgreSQL's `ts_rank_cd` does, while SQLite's `bm25` would not (it
//! weighs words by how many tasks have them), so a task inserted between two pages would
//! move the others' keys and the pages would skip or repeat tasks. On SQLite the key counts
//! the matches in each column instead, with `highlight`.

use sea_orm::sea_query::{Expr, IntoIden, JoinType};
use sea_orm::{DbBackend, QueryFilter, QueryTrait, Select};
use taskmesh_shared::error::ApiError;

use super::entity::Entity;

/// The text search configuration of the tsvector column and of every query against it.
/// The migration's column and the queries must agree, or the GIN index finds nothing.
pub(super) const PG_CONFIG: &str = "simple";

/// The FTS5 table over `tasks` (SQLite).
pub(super) const FTS_TABLE: &str = "tasks_fts";

/// The stored tsvector column of `tasks` (PostgreSQL).
pub(super) const PG_COLUMN: &str = "search";

/// A rank of 1.0 as an integer key: six decimals are finer than `ts_rank_cd`'s float4
/// carries, and the largest ranks (a few hundred) stay far from `i64::MAX`.
const RANK_SCALE: i64 = 1_000_000;

/// A title match counts 1.0 and a description match 0.4, each times `RANK_SCALE`.
const TITLE_WEIGHT: i64 = RANK_SCALE;
const DESCRIPTION_WEIGHT: i64 = RANK_SCALE * 2 / 5;

/// A parsed search, ready for one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Search {
    backend: DbBackend,
    terms: Vec<Term>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Term {
    /// One word, or a phrase's words separated by single spaces. A "word" may still hold
    /// punctuation (`e-mail`): both backends' tokenizers split it, and the pieces must then
    /// follow each other, as in a phrase.
    text: String,
    excluded: bool,
    /// Matches the words that start with `text` (written `text*`).
    prefix: bool,
}

impl Search {
    /// Parses `text`; INVALID_ARGUMENT on `query` when it has nothing to look for.
    pub(super) fn new(backend: DbBackend, text: &str) -> Result<Self, ApiError> {
        let terms = parse(text).map_err(|reason| ApiError::invalid("query", reason))?;
        Ok(Self { backend, terms })
    }

    /// Restricts `select` to the tasks that match. With `ranked`, it also brings in what
    /// `rank` reads, which costs more where no rank is needed: on SQLite it joins the FTS
    /// table, whose `highlight` only works in a join with the match, while unranked it asks
    /// for the matching rows with `IN`, which lets the planner walk an index of `tasks` in
    /// the order asked for and stop at the page's end.
    pub(super) fn restrict(&self, select: Select<Entity>, ranked: bool) -> Select<Entity> {
        match self.backend {
            // A word of characters PostgreSQL's parser does not take as letters (`½`) is
            // dropped from the query; when only excluded words are left, the query would
            // match every task without them (`querytree` is then `T`): it matches none.
            DbBackend::Postgres => select.filter(Expr::cust_with_values(
                format!(
                    r#""tasks"."{PG_COLUMN}" @@ to_tsquery('{PG_CONFIG}', $1) AND querytree(to_tsquery('{PG_CONFIG}', $1)) <> 'T'"#
                ),
                [self.tsquery()],
            )),
            _ if ranked => {
                // The `+` hides the FTS side's rowid from the planner, so that the match
                // drives the join and each match finds its task by rowid. Offered the
                // rowid, and with no statistics, SQLite guessed that a list holds ten tasks
                // and walked the whole list, matching each task on its own.
                let mut select = select;
                QueryTrait::query(&mut select).join(
                    JoinType::InnerJoin,
                    FTS_TABLE.into_iden(),
                    Expr::cust(format!(r#"+"{FTS_TABLE}"."rowid" = "tasks"."rowid""#)),
                );
                select.filter(Expr::cust_with_values(
                    format!(r#""{FTS_TABLE}" MATCH ?"#),
                    [self.fts5()],
                ))
            }
            _ => select.filter(Expr::cust_with_values(
                format!(
                    r#""tasks"."rowid" IN (SELECT "rowid" FROM "{FTS_TABLE}" WHERE "{FTS_TABLE}" MATCH ?)"#
                ),
                [self.fts5()],
            )),
        }
    }

    /// The relevance of a task as an integer, higher is better, for a select that
    /// `restrict` ranked.
    pub(super) fn rank(&self) -> Expr {
        match self.backend {
            DbBackend::Postgres => Expr::cust_with_values(
                format!(
                    "CAST(CAST(ts_rank_cd('{{0.1, 0.2, 0.4, 1.0}}', \"tasks\".\"{PG_COLUMN}\", \
                     to_tsquery('{PG_CONFIG}', $1)) AS DOUBLE PRECISION) * {RANK_SCALE} AS BIGINT)"
                ),
                [self.tsquery()],
            ),
            // `highlight` marks each match with one character: the text grows by one per
            // match. The weights are PostgreSQL's for A and B, as above.
            _ => Expr::cust(format!(
                "({TITLE_WEIGHT} * (length(highlight(\"{FTS_TABLE}\", 0, char(1), '')) \
                 - length(\"tasks\".\"title\")) \
                 + {DESCRIPTION_WEIGHT} * (length(highlight(\"{FTS_TABLE}\", 1, char(1), '')) \
                 - length(\"tasks\".\"description\")))"
            )),
        }
    }

    /// The FTS5 query: each term a string (FTS5 reads nothing inside one as syntax), the
    /// wanted ones all required, then the excluded ones taken away.
    fn fts5(&self) -> String {
        let string = |term: &Term| {
            let quoted = format!("\"{}\"", term.text.replace('"', "\"\""));
            if term.prefix { quoted + " *" } else { quoted }
        };
        let wanted: Vec<String> = self
            .terms
            .iter()
            .filter(|t| !t.excluded)
            .map(string)
            .collect();
        let excluded: Vec<String> = self
            .terms
            .iter()
            .filter(|t| t.excluded)
            .map(string)
            .collect();
        let mut query = format!("({})", wanted.join(" AND "));
        if !excluded.is_empty() {
            query.push_str(&format!(" NOT ({})", excluded.join(" OR ")));
        }
        query
    }

    /// The `to_tsquery` text: each term a quoted lexeme (several words in one become a
    /// phrase), `!` before the excluded, `:*` after a prefix, all joined with `&`.
    fn tsquery(&self) -> String {
        self.terms
            .iter()
            .map(|term| {
                let quoted = term.text.replace('\\', "\\\\").replace('\'', "''");
                format!(
                    "{}'{quoted}'{}",
                    if term.excluded { "!" } else { "" },
                    if term.prefix { ":*" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join(" & ")
    }
}

/// The terms of `text`, or why there is nothing to search for.
fn parse(text: &str) -> Result<Vec<Term>, String> {
    let mut terms = Vec::new();
    // Control characters separate words, as in both tokenizers (and PostgreSQL refuses a
    // NUL in any text).
    let separates = |c: char| c.is_whitespace() || c.is_control();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|&c| separates(c)).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let excluded = chars.next_if_eq(&'-').is_some();
        let mut raw = String::new();
        let phrase = chars.next_if_eq(&'"').is_some();
        if phrase {
            // An unclosed quote runs to the end, as web searches read it.
            raw.extend(
                chars
                    .by_ref()
                    .take_while(|&c| c != '"')
                    .map(|c| if separates(c) { ' ' } else { c }),
            );
        } else {
            while let Some(c) = chars.next_if(|&c| !separates(c) && c != '"') {
                raw.push(c);
            }
        }
        let mut term = Term {
            text: raw.split_whitespace().collect::<Vec<_>>().join(" "),
            excluded,
            prefix: false,
        };
        if !phrase && let Some(stem) = term.text.strip_suffix('*') {
            let stem = stem.trim_end_matches('*');
            // Only a plain word takes a prefix; elsewhere the `*` is punctuation, which the
            // tokenizers drop.
            if !stem.is_empty() && stem.chars().all(char::is_alphanumeric) {
                term.text = stem.to_owned();
                term.prefix = true;
            }
        }
        // Punctuation alone is no word to either tokenizer: a term of it would match
        // nothing on SQLite and be ignored on PostgreSQL.
        if !term.text.chars().any(char::is_alphanumeric) {
            continue;
        }
        if !terms.contains(&term) {
            terms.push(term);
        }
    }
    if terms.is_empty() {
        return Err("has no words to look for".into());
    }
    if terms.iter().all(|t| t.excluded) {
        return Err("only excludes words (-word); give at least one word to look for".into());
    }
    Ok(terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(text: &str) -> Search {
        Search::new(DbBackend::Sqlite, text).unwrap()
    }

    fn both(text: &str) -> (String, String) {
        let search = search(text);
        (search.fts5(), search.tsquery())
    }

    fn refusal(text: &str) -> String {
        match parse(text) {
            Err(reason) => reason,
            Ok(terms) => panic!("{text:?} was accepted as {terms:?}"),
        }
    }

    #[test]
    fn words_are_all_required_and_quoted() {
        assert_eq!(
            both("buy  milk"),
            (
                r#"("buy" AND "milk")"#.to_owned(),
                "'buy' & 'milk'".to_owned()
            )
        );
    }

    #[test]
    fn phrases_exclusions_and_prefixes() {
        assert_eq!(
            both(r#"renew "the  passport" -urgent -"next week" plan*"#),
            (
                r#"("renew" AND "the passport" AND "plan" *) NOT ("urgent" OR "next week")"#
                    .to_owned(),
                "'renew' & 'the passport' & !'urgent' & !'next week' & 'plan':*".to_owned()
            )
        );
        // An unclosed quote runs to the end.
        assert_eq!(both(r#"a "b c"#).0, r#"("a" AND "b c")"#);
        // A dash inside a word is the word's; only a leading one excludes.
        assert_eq!(both("e-mail -spam").1, "'e-mail' & !'spam'");
        assert_eq!(both("buy milk*** -old*").1, "'buy' & 'milk':* & !'old':*");
    }

    #[test]
    fn operators_of_either_backend_are_only_words() {
        // FTS5's operators, column filters, prefixes and grouping; tsquery's operators.
        assert_eq!(
            both("NEAR(a b) OR title:x AND NOT y ^z"),
            (
                r#"("NEAR(a" AND "b)" AND "OR" AND "title:x" AND "AND" AND "NOT" AND "y" AND "^z")"#
                    .to_owned(),
                "'NEAR(a' & 'b)' & 'OR' & 'title:x' & 'AND' & 'NOT' & 'y' & '^z'".to_owned()
            )
        );
        assert_eq!(
            both(r"a&b|c !d <-> e:*A"),
            (
                r#"("a&b|c" AND "!d" AND "e:*A")"#.to_owned(),
                "'a&b|c' & '!d' & 'e:*A'".to_owned()
            )
        );
    }

    #[test]
    fn quotes_and_backslashes_cannot_end_a_string() {
        // A double quote always opens or closes a phrase, so none is ever inside a term.
        assert_eq!(both(r#"it's" x"#).0, r#"("it's" AND "x")"#);
        assert_eq!(
            both(r#"it's back\slash '' \'"#).1,
            r"'it''s' & 'back\\slash'"
        );
        assert_eq!(both(r#"a""b"#).0, r#"("a" AND "b")"#);
    }

    #[test]
    fn a_prefix_only_ends_a_plain_word() {
        // Inside or around punctuation, `*` is punctuation: no prefix.
        assert_eq!(both("e-mail*").1, "'e-mail*'");
        assert_eq!(both("*plan").1, "'*plan'");
        assert_eq!(both(r#""a b"*"#).1, "'a b'");
        assert_eq!(both("café* 東京*").1, "'café':* & '東京':*");
    }

    #[test]
    fn unicode_words_are_words() {
        assert_eq!(
            both("Ünïcødé 東京 café 🎉 ½").1,
            "'Ünïcødé' & '東京' & 'café' & '½'"
        );
        // A combining mark or an emoji alone is not a word to either backend.
        assert_eq!(both("a \u{301} 🎉🎉").1, "'a'");
    }

    #[test]
    fn repeated_terms_are_kept_once() {
        assert_eq!(both("milk milk -x -x").1, "'milk' & !'x'");
    }

    #[test]
    fn control_characters_separate_words() {
        assert_eq!(both("a\u{0}b \"c\u{7}d\"").1, "'a' & 'b' & 'c d'");
    }

    #[test]
    fn nothing_to_look_for_is_refused_with_the_reason() {
        for text in ["", "   ", "*", "\"\"", "- -- ***", ":()", "🎉", "\"   \""] {
            assert_eq!(refusal(text), "has no words to look for", "{text:?}");
        }
        for text in ["-milk", "-\"the shop\" -x*", "-a *"] {
            assert!(refusal(text).starts_with("only excludes"), "{text:?}");
        }
        let err = Search::new(DbBackend::Postgres, "-milk").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn hostile_text_never_leaves_a_string() {
        // Whatever the text, every double quote in the FTS5 query opens or closes one of
        // our strings (an even count, never doubled inside), and every single quote in the
        // tsquery is one of ours or doubled.
        let samples = [
            r#"""""'''\\\"*-(){}[]:^+~!&|<->"#,
            "\"\u{0}\u{7f}\u{202e}-\"",
            "- \"-\" --x \"unterminated -",
            "NEAR/3 \"a\" * OR( ) * :",
            r"'\'' \\'",
        ];
        for text in samples {
            let Ok(terms) = parse(text) else { continue };
            let search = Search {
                backend: DbBackend::Sqlite,
                terms,
            };
            let fts = search.fts5();
            assert_eq!(fts.matches('"').count() % 2, 0, "{fts}");
            assert!(!fts.contains("\"\"\""), "{fts}");
            let ts = search.tsquery();
            let unquoted: String = ts.replace("''", "");
            assert_eq!(unquoted.matches('\'').count() % 2, 0, "{ts}");
        }
    }

    #[test]
    fn ranks_weigh_title_and_description_as_postgresql_does() {
        assert_eq!(TITLE_WEIGHT, 1_000_000);
        assert_eq!(DESCRIPTION_WEIGHT, 400_000);
    }
}

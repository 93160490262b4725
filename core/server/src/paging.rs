//! Pages of a listing (`ListTasks`, `ListNodes`): at most `page_size`
//! items after the key in `page_token`, the last key of the previous page.
//! Listings read ordered maps from that key on, so a page costs its own
//! size, not the table's.

use std::ops::Bound;

use tonic::Status;

/// The largest page; 0 asks for everything.
pub(crate) const MAX_PAGE: u32 = 10_000;
/// The longest token, in characters (a task id or a node name).
const MAX_TOKEN: usize = 256;

/// A page asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    /// Items at most (0: all).
    size: usize,
    /// The last key of the previous page.
    after: Option<String>,
}

impl Page {
    /// Checks a request's `page_size` and `page_token`.
    pub(crate) fn new(size: u32, token: String) -> Result<Page, Status> {
        if size > MAX_PAGE {
            return Err(Status::invalid_argument(format!(
                "page_size: {size} is more than {MAX_PAGE} (0 lists everything)"
            )));
        }
        if token.chars().count() > MAX_TOKEN {
            return Err(Status::invalid_argument(format!(
                "page_token: longer than {MAX_TOKEN} characters (pass the previous answer's next_page_token)"
            )));
        }
        Ok(Page {
            size: size as usize,
            after: (!token.is_empty()).then_some(token),
        })
    }

    /// Where a range over the keys starts.
    pub(crate) fn start(&self) -> Bound<&str> {
        self.after
            .as_deref()
            .map_or(Bound::Unbounded, Bound::Excluded)
    }

    /// The page from `items` (keys ascending, from [`Page::start`] on),
    /// and the token of the next page (empty when there is none).
    pub(crate) fn take<'k, T>(
        &self,
        items: impl Iterator<Item = (&'k str, T)>,
    ) -> (Vec<T>, String) {
        if self.size == 0 {
            return (items.map(|(_, v)| v).collect(), String::new());
        }
        let mut out = Vec::with_capacity(self.size.min(1024));
        let mut last = "";
        for (key, v) in items {
            if out.len() == self.size {
                return (out, last.to_string());
            }
            last = key;
            out.push(v);
        }
        (out, String::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("k{i:02}")).collect()
    }

    fn page(all: &[String], size: u32, token: &str) -> (Vec<String>, String) {
        let p = Page::new(size, token.to_string()).unwrap();
        let from = all
            .iter()
            .filter(|k| match p.start() {
                Bound::Excluded(t) => k.as_str() > t,
                _ => true,
            })
            .map(|k| (k.as_str(), k.clone()));
        p.take(from)
    }

    #[test]
    fn pages_cover_everything_once() {
        let all = keys(7);
        let (mut seen, mut token) = (Vec::new(), String::new());
        loop {
            let (items, next) = page(&all, 3, &token);
            seen.extend(items);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(seen, all);
        // A full last page says there is no more.
        assert_eq!(
            page(&keys(6), 3, "k02"),
            (
                vec!["k03".into(), "k04".into(), "k05".into()],
                String::new()
            )
        );
        assert_eq!(page(&all, 0, "").0.len(), 7);
    }

    #[test]
    fn bad_pages_are_refused_by_name() {
        let e = Page::new(MAX_PAGE + 1, String::new()).unwrap_err();
        assert!(e.message().starts_with("page_size:"), "{}", e.message());
        let e = Page::new(10, "x".repeat(300)).unwrap_err();
        assert!(e.message().starts_with("page_token:"), "{}", e.message());
    }
}

//! Next's i18n step before middleware matching: a path without a locale prefix is
//! matched with the default locale added (Next's `resolve-routes` does this before it
//! runs the middleware matchers), so `/premium/x` and `/en/premium/x` get the same rule.

use std::borrow::Cow;

/// The path the rules see for `path` when the app has i18n `locales`: unchanged when
/// its first segment (after `base_path`) is a locale — compared case-insensitively, as
/// Next's `normalizeLocalePath` does, and also when it is percent-encoded — or when it
/// starts with `/_next/`; otherwise `/<default_locale>` is inserted after `base_path`.
///
/// One step stricter than Next: a pages data path `/_next/data/<build>/<page>.json`
/// gets the locale after its data prefix too, because the app serves that page's data
/// whatever Next's middleware matched.
pub fn localise<'a>(
    path: &'a str,
    base_path: &str,
    locales: &[String],
    default_locale: &str,
) -> Cow<'a, str> {
    if locales.is_empty() || default_locale.is_empty() {
        return Cow::Borrowed(path);
    }
    let (base, rest) = match path.strip_prefix(base_path) {
        Some(r) if !base_path.is_empty() && (r.is_empty() || r.starts_with('/')) => (base_path, r),
        _ => ("", path),
    };
    let (data, page) = match rest.strip_prefix("/_next/data/") {
        Some(after) => match after.split_once('/') {
            Some((build, _)) => rest.split_at("/_next/data/".len() + build.len()),
            None => return Cow::Borrowed(path),
        },
        None if rest.starts_with("/_next/") => return Cow::Borrowed(path),
        None => ("", rest),
    };
    let first = page
        .strip_prefix('/')
        .unwrap_or(page)
        .split('/')
        .next()
        .unwrap_or("");
    if is_locale(first, locales) {
        return Cow::Borrowed(path);
    }
    let page = if page == "/" { "" } else { page };
    Cow::Owned(format!("{base}{data}/{default_locale}{page}"))
}

/// True when a first path segment names one of `locales` (a `.json` data suffix
/// ignored: locales never contain a dot).
fn is_locale(segment: &str, locales: &[String]) -> bool {
    let name = segment.split('.').next().unwrap_or("");
    if name.is_empty() {
        return false;
    }
    let hit = |s: &str| locales.iter().any(|l| l.eq_ignore_ascii_case(s));
    hit(name)
        || (name.contains('%')
            && percent_encoding::percent_decode_str(name)
                .decode_utf8()
                .is_ok_and(|d| hit(&d)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(path: &str, base: &str) -> String {
        localise(path, base, &["en".into(), "fr".into()], "en").into_owned()
    }

    #[test]
    fn the_default_locale_is_added_where_next_adds_it() {
        assert_eq!(l("/premium/x", ""), "/en/premium/x");
        assert_eq!(l("/premium/", ""), "/en/premium/");
        assert_eq!(l("/", ""), "/en");
        assert_eq!(l("/fr/premium/x", ""), "/fr/premium/x");
        assert_eq!(l("/FR/premium/x", ""), "/FR/premium/x");
        assert_eq!(l("/%66r/premium/x", ""), "/%66r/premium/x");
        assert_eq!(l("/french/x", ""), "/en/french/x");
        assert_eq!(l("/_next/static/a.js", ""), "/_next/static/a.js");
        assert_eq!(l("/api/x", ""), "/en/api/x");
        // basePath: the locale goes after it; paths outside it get it in front
        assert_eq!(l("/docs/premium", "/docs"), "/docs/en/premium");
        assert_eq!(l("/docs", "/docs"), "/docs/en");
        assert_eq!(l("/docs/", "/docs"), "/docs/en");
        assert_eq!(l("/docs/fr/a", "/docs"), "/docs/fr/a");
        assert_eq!(l("/docsx/a", "/docs"), "/en/docsx/a");
        // pages data requests
        assert_eq!(
            l("/_next/data/b1/premium/x.json", ""),
            "/_next/data/b1/en/premium/x.json"
        );
        assert_eq!(l("/_next/data/b1/fr.json", ""), "/_next/data/b1/fr.json");
        assert_eq!(l("/_next/data/b1", ""), "/_next/data/b1");
        // no i18n: untouched, without allocating
        assert!(matches!(
            localise("/premium/x", "", &[], ""),
            Cow::Borrowed(_)
        ));
    }
}

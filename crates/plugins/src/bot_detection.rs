//! bot-detection (`kong/plugins/bot-detection/{schema,handler,rules}.lua`): rejects
//! requests whose `User-Agent` matches a `deny` pattern or Kong's built-in bot list,
//! unless an `allow` pattern matches first.

use crate::api::{Exit, Flow, Phases, Plugin, PluginError, PluginSpec, RequestCx};
use http::header::USER_AGENT;
use regex::RegexSet;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::LazyLock;
use tollgate_model::schema::{Field, Type};
use tollgate_model::PluginDef;

pub const NAME: &str = "bot-detection";
pub const PRIORITY: i32 = 2500;

pub const ERR_MULTIPLE_USER_AGENTS: &str = "Only one User-Agent header allowed";
/// `kong.response.error(403)` without a message.
pub const ERR_FORBIDDEN: &str = "Forbidden";

pub static SPEC: PluginSpec = PluginSpec {
    name: NAME,
    priority: PRIORITY,
    no_consumer: true,
    no_route: false,
    no_service: false,
    phases: Phases::ACCESS,
    schema,
    compile,
};

/// Kong's `kong/plugins/bot-detection/rules.lua` (taken by Kong from ua-parser's uap-core
/// `regexes.yaml`).
pub const BOTS: &[&str] = &[
    r#"(Pingdom\.com_bot_version_)(\d+)\.(\d+)"#,
    r#"(facebookexternalhit)/(\d+)\.(\d+)"#,
    r#"Google.*/\+/web/snippet"#,
    r#"(Twitterbot)/(\d+)\.(\d+)"#,
    r#"\b(Boto3?|JetS3t|aws-(?:cli|sdk-(?:cpp|go|java|nodejs|ruby2?|dotnet-(?:\d{1,2}|core)))|s3fs)/(\d+)\.(\d+)(?:\.(\d+)|)"#,
    r#" PTST/\d+(?:\.)?\d+$"#,
    r#"/((?:Ant-)?Nutch|[A-z]+[Bb]ot|[A-z]+[Ss]pider|Axtaris|fetchurl|Isara|ShopSalad|Tailsweep)[ \-](\d+)(?:\.(\d+)(?:\.(\d+))?)?"#,
    r#"\b(008|Altresium|Argus|BaiduMobaider|BoardReader|DNSGroup|DataparkSearch|EDI|Goodzer|Grub|INGRID|Infohelfer|LinkedInBot|LOOQ|Nutch|OgScrper|PathDefender|Peew|PostPost|Steeler|Twitterbot|VSE|WebCrunch|WebZIP|Y!J-BR[A-Z]|YahooSeeker|envolk|sproose|wminer)/(\d+)(?:\.(\d+)|)(?:\.(\d+)|)"#,
    r#"(MSIE) (\d+)\.(\d+)([a-z]\d|[a-z]|);.* MSIECrawler"#,
    r#"(Google-HTTP-Java-Client|Apache-HttpClient|Go-http-client|scalaj-http|http%20client|Python-urllib|HttpMonitor|TLSProber|WinHTTP|JNLP|okhttp|aihttp|reqwest|axios|unirest-(?:java|python|ruby|nodejs|php|net))(?:[ /](\d+)(?:\.(\d+)|)(?:\.(\d+)|)|)"#,
    r#"(CSimpleSpider|Cityreview Robot|CrawlDaddy|CrawlFire|Finderbots|Index crawler|Job Roboter|KiwiStatus Spider|Lijit Crawler|QuerySeekerSpider|ScollSpider|Trends Crawler|USyd-NLP-Spider|SiteCat Webbot|BotName\/\$BotVersion|123metaspider-Bot|1470\.net crawler|50\.nu|8bo Crawler Bot|Aboundex|Accoona-[A-z]{1,30}-Agent|AdsBot-Google(?:-[a-z]{1,30}|)|altavista|AppEngine-Google|archive.{0,30}\.org_bot|archiver|Ask Jeeves|[Bb]ai[Dd]u[Ss]pider(?:-[A-Za-z]{1,30})(?:-[A-Za-z]{1,30}|)|bingbot|BingPreview|blitzbot|BlogBridge|Bloglovin|BoardReader Blog Indexer|BoardReader Favicon Fetcher|boitho.com-dc|BotSeer|BUbiNG|\b\w{0,30}favicon\w{0,30}\b|\bYeti(?:-[a-z]{1,30}|)|Catchpoint(?: bot|)|[Cc]harlotte|Checklinks|clumboot|Comodo HTTP\(S\) Crawler|Comodo-Webinspector-Crawler|ConveraCrawler|CRAWL-E|CrawlConvera|Daumoa(?:-feedfetcher|)|Feed Seeker Bot|Feedbin|findlinks|Flamingo_SearchEngine|FollowSite Bot|furlbot|Genieo|gigabot|GomezAgent|gonzo1|(?:[a-zA-Z]{1,30}-|)Googlebot(?:-[a-zA-Z]{1,30}|)|Google SketchUp|grub-client|gsa-crawler|heritrix|HiddenMarket|holmes|HooWWWer|htdig|ia_archiver|ICC-Crawler|Icarus6j|ichiro(?:/mobile|)|IconSurf|IlTrovatore(?:-Setaccio|)|InfuzApp|Innovazion Crawler|InternetArchive|IP2[a-z]{1,30}Bot|jbot\b|KaloogaBot|Kraken|Kurzor|larbin|LEIA|LesnikBot|Linguee Bot|LinkAider|LinkedInBot|Lite Bot|Llaut|lycos|Mail\.RU_Bot|masscan|masidani_bot|Mediapartners-Google|Microsoft .{0,30} Bot|mogimogi|mozDex|MJ12bot|msnbot(?:-media {0,2}|)|msrbot|Mtps Feed Aggregation System|netresearch|Netvibes|NewsGator[^/]{0,30}|^NING|Nutch[^/]{0,30}|Nymesis|ObjectsSearch|OgScrper|Orbiter|OOZBOT|PagePeeker|PagesInventory|PaxleFramework|Peeplo Screenshot Bot|PlantyNet_WebRobot|Pompos|Qwantify|Read%20Later|Reaper|RedCarpet|Retreiver|Riddler|Rival IQ|scooter|Scrapy|Scrubby|searchsight|seekbot|semanticdiscovery|SemrushBot|Simpy|SimplePie|SEOstats|SimpleRSS|SiteCon|Slackbot-LinkExpanding|Slack-ImgProxy|Slurp|snappy|Speedy Spider|Squrl Java|Stringer|TheUsefulbot|ThumbShotsBot|Thumbshots\.ru|Tiny Tiny RSS|Twitterbot|WhatsApp|URL2PNG|Vagabondo|VoilaBot|^vortex|Votay bot|^voyager|WASALive.Bot|Web-sniffer|WebThumb|WeSEE:[A-z]{1,30}|WhatWeb|WIRE|WordPress|Wotbox|www\.almaden\.ibm\.com|Xenu(?:.s|) Link Sleuth|Xerka [A-z]{1,30}Bot|yacy(?:bot|)|YahooSeeker|Yahoo! Slurp|Yandex\w{1,30}|YodaoBot(?:-[A-z]{1,30}|)|YottaaMonitor|Yowedo|^Zao|^Zao-Crawler|ZeBot_www\.ze\.bz|ZooShot|ZyBorg)(?:[ /]v?(\d+)(?:\.(\d+)(?:\.(\d+)|)|)|)"#,
    r#"(?:\/[A-Za-z0-9\.]+|) {0,5}([A-Za-z0-9 \-_\!\[\]:]{0,50}(?:[Aa]rchiver|[Ii]ndexer|[Ss]craper|[Bb]ot|[Ss]pider|[Cc]rawl[a-z]{0,50}))[/ ](\d+)(?:\.(\d+)(?:\.(\d+)|)|)"#,
    r#"(?:\/[A-Za-z0-9\.]+|) {0,5}([A-Za-z0-9 \-_\!\[\]:]{0,50}(?:[Aa]rchiver|[Ii]ndexer|[Ss]craper|[Bb]ot|[Ss]pider|[Cc]rawl[a-z]{0,50})) (\d+)(?:\.(\d+)(?:\.(\d+)|)|)"#,
    r#"((?:[A-z0-9]{1,50}|[A-z\-]{1,50} ?|)(?: the |)(?:[Ss][Pp][Ii][Dd][Ee][Rr]|[Ss]crape|[Cc][Rr][Aa][Ww][Ll])[A-z0-9]{0,50})(?:(?:[ /]| v)(\d+)(?:\.(\d+)|)(?:\.(\d+)|)|)"#,
];

static BUILT_IN: LazyLock<RegexSet> =
    LazyLock::new(|| RegexSet::new(BOTS).expect("the built-in bot rules compile"));

/// Kong's `is_regex` element validator.
fn validate_regex(s: &str) -> Result<(), String> {
    regex::Regex::new(s)
        .map(|_| ())
        .map_err(|_| format!("'{s}' is not a valid regex"))
}

fn schema() -> PluginDef {
    let list = |name, d| {
        Field::new(
            name,
            Type::Array(Box::new(
                Field::new("element", Type::String).custom(validate_regex),
            )),
        )
        .default(json!([]))
        .describe(d)
    };
    PluginDef {
        name: NAME,
        priority: PRIORITY,
        version: crate::VERSION,
        config: vec![
            list("allow", "An array of regular expressions that should be allowed. The regular expressions will be checked against the `User-Agent` header."),
            list("deny", "An array of regular expressions that should be denied. The regular expressions will be checked against the `User-Agent` header."),
        ],
        config_checks: Vec::new(),
        checks: Vec::new(),
        no_consumer: true,
        no_route: false,
        no_service: false,
        protocols: None,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct BotDetectionConfig {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
}

/// bot-detection compiled: each list as one regex set.
pub struct BotDetection {
    allow: RegexSet,
    deny: RegexSet,
}

fn compile(config: &Value) -> Result<Box<dyn Plugin>, String> {
    let c: BotDetectionConfig =
        serde_json::from_value(config.clone()).map_err(|e| e.to_string())?;
    let set =
        |l: Option<Vec<String>>| RegexSet::new(l.unwrap_or_default()).map_err(|e| e.to_string());
    LazyLock::force(&BUILT_IN);
    Ok(Box::new(BotDetection {
        allow: set(c.allow)?,
        deny: set(c.deny)?,
    }))
}

impl BotDetection {
    /// Kong's `examine_agent`: allowed, or denied (by a rule or as a bot).
    fn denied(&self, ua: &str) -> bool {
        let ua = ua.trim();
        if self.allow.is_match(ua) {
            return false;
        }
        self.deny.is_match(ua) || BUILT_IN.is_match(ua)
    }
}

impl Plugin for BotDetection {
    fn access(&self, cx: &mut RequestCx<'_>) -> Result<Flow, PluginError> {
        let mut uas = cx.req.headers.get_all(USER_AGENT).iter();
        let ua = match (uas.next(), uas.next()) {
            (None, _) => return Ok(Flow::Continue),
            (Some(v), None) => String::from_utf8_lossy(v.as_bytes()),
            (Some(_), Some(_)) => {
                return Ok(Flow::Exit(Exit::error(400, ERR_MULTIPLE_USER_AGENTS)))
            }
        };
        Ok(if self.denied(&ua) {
            Flow::Exit(Exit::error(403, ERR_FORBIDDEN))
        } else {
            Flow::Continue
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{fixture, parts, run_access};

    fn plugin(config: Value) -> Box<dyn Plugin> {
        compile(&Value::Object(crate::testing::defaults(&SPEC, config))).unwrap()
    }

    fn ua(p: &dyn Plugin, agents: &[&str]) -> Flow {
        let ix = fixture();
        let h: Vec<(&str, &str)> = agents.iter().map(|a| ("user-agent", *a)).collect();
        run_access(p, &ix, parts("GET", "/", &h), None).0
    }

    #[test]
    fn built_in_bots_are_blocked() {
        let p = plugin(json!({}));
        assert!(ua(&*p, &[]).is_continue(), "no User-Agent");
        let browser = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";
        assert!(ua(&*p, &[browser]).is_continue());
        for bot in [
            "Googlebot/2.1 (+http://www.google.com/bot.html)",
            "curl/7.68.0 Mozilla/5.0 (compatible; bingbot/2.0)",
            "python-requests/2.31 Python-urllib/3.11",
            "Go-http-client/1.1",
            "facebookexternalhit/1.1",
            "Apache-HttpClient/4.5.13 (Java/11)",
        ] {
            let e = ua(&*p, &[bot]).unwrap_exit();
            assert_eq!((e.status, e.message()), (403, ERR_FORBIDDEN), "{bot}");
        }
        let e = ua(&*p, &["a", "b"]).unwrap_exit();
        assert_eq!((e.status, e.message()), (400, ERR_MULTIPLE_USER_AGENTS));
    }

    #[test]
    fn allow_beats_deny_and_the_list() {
        let p = plugin(json!({"allow": ["^Googlebot"], "deny": ["^curl/", "MyAgent"]}));
        assert!(ua(&*p, &["Googlebot/2.1"]).is_continue());
        assert_eq!(ua(&*p, &["curl/8.0"]).unwrap_exit().status, 403);
        assert_eq!(ua(&*p, &["  the MyAgent 1"]).unwrap_exit().status, 403);
        assert!(ua(&*p, &["HTTPie/3.2"]).is_continue());
        assert_eq!(ua(&*p, &["Go-http-client/2.0"]).unwrap_exit().status, 403);
    }

    #[test]
    fn bad_regex_is_a_schema_error() {
        assert!(validate_regex("[a-").is_err());
        assert_eq!(validate_regex("(").unwrap_err(), "'(' is not a valid regex");
        assert!(validate_regex("^a+$").is_ok());
    }
}

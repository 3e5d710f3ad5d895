//! Classification of HTTP requests: attack payloads, scanners and bots.
//!
//! The request is first decoded the way a server would see it: percent
//! escapes (repeatedly, for double encoding; `%uXXXX`; over-long UTF-8
//! such as `%c0%af`), `+` as a space in queries and forms, and HTML
//! entities for the markup rules. Rules then look at the path, every query
//! and form value, the body and the user agent. Each rule has a name that
//! is reported when it matches, so an operator can see why a request was
//! flagged.
//!
//! Precedence follows what matters to a defender: an attack payload
//! outranks a scanner, a scanner outranks a bot. Among payload classes the
//! first in [`Class::PAYLOADS`] order with a match wins.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::bytes::{RegexSet, RegexSetBuilder};
use regex::Regex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    Benign,
    Sqli,
    Xss,
    PathTraversal,
    CmdInjection,
    Scanner,
    Bot,
}

impl Class {
    pub const ALL: [Class; 7] = [
        Class::Benign,
        Class::Sqli,
        Class::Xss,
        Class::PathTraversal,
        Class::CmdInjection,
        Class::Scanner,
        Class::Bot,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Benign => "benign",
            Class::Sqli => "sqli",
            Class::Xss => "xss",
            Class::PathTraversal => "path_traversal",
            Class::CmdInjection => "cmd_injection",
            Class::Scanner => "scanner",
            Class::Bot => "bot",
        }
    }

    pub fn parse(s: &str) -> Option<Class> {
        Class::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The attack classes, in the order that breaks ties.
    pub const PAYLOADS: [Class; 4] = [
        Class::Sqli,
        Class::Xss,
        Class::PathTraversal,
        Class::CmdInjection,
    ];

    /// Whether the class is an attack payload (as opposed to who sent it).
    pub fn is_attack(self) -> bool {
        matches!(
            self,
            Class::Sqli | Class::Xss | Class::PathTraversal | Class::CmdInjection
        )
    }
}

/// What the classifier reads of a request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    /// As on the wire, percent-encoding kept; may include `?query`.
    pub path: &'a str,
    /// Raw, without the leading `?`.
    pub query: &'a str,
    /// The `User-Agent` header: `Some("")` when the request had none,
    /// `None` when it is not known (a log that does not record it).
    pub user_agent: Option<&'a str>,
    pub body: &'a str,
    pub content_type: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub class: Class,
    pub rules: Vec<&'static str>,
}

struct Rule {
    name: &'static str,
    class: Class,
    pattern: &'static str,
}

const fn rule(name: &'static str, class: Class, pattern: &'static str) -> Rule {
    Rule {
        name,
        class,
        pattern,
    }
}

/// How much a matching rule says about the payload's class. Rules that
/// name a target (a sensitive file) or a shape several languages share
/// count less than rules that name a technique.
fn weight(name: &str) -> u32 {
    match name {
        "traversal_sensitive_file"
        | "sqli_conditional"
        | "sqli_stacked_query"
        | "sqli_boolean_comparison"
        | "sqli_inline_comment"
        | "sqli_quote_break"
        | "sqli_functions"
        | "xss_dangerous_tag" => 1,
        name if name.starts_with("cmd_") => 3,
        _ => 2,
    }
}

/// Rules over decoded values (path, query and form values, body, user
/// agent). Case-insensitive.
const PAYLOAD_RULES: &[Rule] = &[
    // SQL injection: structure, not keywords alone, so that "select
    // comfort mattress" or "O'Brien and sons" pass.
    rule(
        "sqli_union_select",
        Class::Sqli,
        r#"(?s)\bunion\b.{0,300}?\bselect\b"#,
    ),
    rule(
        "sqli_select_from",
        Class::Sqli,
        r#"\bselect\b[\s(]+[\w*@'`,.()\s]+?\bfrom\b\s*[\w.`\[(]+(\s+(where|limit|order|group)\b|\s*(--|#|;|/\*|\)|$))"#,
    ),
    rule(
        "sqli_quote_boolean",
        Class::Sqli,
        r#"['"`]\s*\)*\s*(\bor\b|\band\b|\bxor\b|\|\||&&|\bdiv\b|\bhaving\b)\s*[\w'"(@.-]+\s*(=|<>|!=|<|>|\*|\(|,|\blike\b|\bis\b|\bbetween\b|\bin\s*\(|\bregexp\b|\brlike\b|--|#|/\*|;)"#,
    ),
    rule(
        "sqli_tautology",
        Class::Sqli,
        r#"\b(or|and|xor|having|where)\b\s+['"(]*\s*[\w'"]+\s*['")]*\s*(=|<>|!=|<=|>=|<|>|\blike\b|\bis\b)\s*['"(]*\s*[\w'"]"#,
    ),
    rule(
        "sqli_comment_terminator",
        Class::Sqli,
        r#"(['"`]|\d\))[ \t]*\)*[ \t]*(;[ \t]*)?(--([ \t]|$)|#[ \t]*$|/\*)"#,
    ),
    rule(
        "sqli_stacked_query",
        Class::Sqli,
        r#";\s*(drop|delete|insert|update|select|shutdown|exec|execute|declare|create|alter|truncate|waitfor|grant|revoke)\b"#,
    ),
    rule(
        "sqli_time_function",
        Class::Sqli,
        r#"\b(sleep|benchmark|pg_sleep|randomblob|dbms_pipe\.receive_message|dbms_lock\.sleep)\s*\(|\bwaitfor\s+(delay|time)\b"#,
    ),
    rule(
        "sqli_metadata",
        Class::Sqli,
        r#"\b(information_schema|sysobjects|syscolumns|sys\.tables|mysql\.user|pg_catalog|pg_shadow|sqlite_master|all_tables|user_tables|msysobjects)\b|@@[a-z_]+"#,
    ),
    rule(
        "sqli_dangerous_function",
        Class::Sqli,
        r#"\b(xp_cmdshell|sp_addlogin|sp_password|sp_configure|sp_executesql|sp_makewebtask|sp_oacreate|load_file|into\s+(out|dump)file|extractvalue|updatexml|utl_inaddr|utl_http|make_set|name_const|group_concat|concat_ws|procedure\s+analyse)\b"#,
    ),
    rule(
        "sqli_ddl",
        Class::Sqli,
        r#"\b(drop|truncate|alter)\s+(table|database|schema|user)\b|\binsert\s+into\b[\s\w`.]+(\(|values\b|select\b)|\bdelete\s+from\s+[\w`.]+\s*(where|;|--|#|$)|\bupdate\s+[\w`.]+\s+set\s+[\w`]+\s*="#,
    ),
    rule(
        "sqli_functions",
        Class::Sqli,
        r#"\b(char|chr|ascii|substring|substr|mid|cast|convert|hex|unhex|ord|unicode|nchar)\s*\(\s*['"\d@(]|\bconcat\w*\s*\(|\b(version|database|user|current_user|system_user|schema|session_user)\s*\(\s*\)"#,
    ),
    rule(
        "sqli_order_by_probe",
        Class::Sqli,
        r#"\b(order|group)\s+by\s+\d+\s*(--|#|,|$|\))"#,
    ),
    rule("sqli_hex_literal", Class::Sqli, r#"\b0x[0-9a-f]{6,}\b"#),
    rule(
        "sqli_postgres_cast",
        Class::Sqli,
        r#"['")]\s*::\s*\w+|@>|<@|\|\|\s*'"#,
    ),
    rule(
        "sqli_conditional",
        Class::Sqli,
        r#"\b(case\s+when\b.+\bthen\b|if\s*\(.+,.+,.+\)|iif\s*\(|elt\s*\(|exists\s*\(\s*select)"#,
    ),
    rule(
        "sqli_quote_break",
        Class::Sqli,
        r#"^['"`]+\s*\)*\s*(;|--|/\*|\)|\|\||&&)"#,
    ),
    rule(
        "sqli_quote_keyword_quote",
        Class::Sqli,
        r#"[\w']'\s*(or|xor|and)\s*'|['"]\s*[*@|^&+-]+[\w@]*\s+(or|and|xor)\s+'|\bxor\s*\d+\s*[<>=]|^['"]\s+(or|and|xor)\s+['"]|['"`]\s*\)*\s*\bunion\b|\(\s*select\b|\bdeclare\s+@\w+|\bbegin\s+goto\b"#,
    ),
    rule(
        "sqli_boolean_comparison",
        Class::Sqli,
        r#"(\|\||&&|\bor\b|\band\b|\bxor\b)\s*[\w'"(@.-]*\s*(=|<|>|\^)\s*[\w'"(@.-]"#,
    ),
    rule(
        "sqli_keyword_then_comment",
        Class::Sqli,
        r#"\b(select|union|or|and|xor|from|where|binary|cos|sin|count|like|glob|false|true|null|notnull|isnull|sleep|having)\b.*(--|#)\s*$|['"`]\s*([+|^=]|\bnot\b|\bis\b)[^'"`]{0,30}(--|#)\s*$"#,
    ),
    rule("sqli_inline_comment", Class::Sqli, r#"/\*!|/\*.*\*/"#),
    rule(
        "sqli_select_expression",
        Class::Sqli,
        r#"\bselect\s*\(|\bselect\s+([\d@*-]|\w+\s*,|\w+\s+(from|as)\b)|\dselect\b|\bselect\s+if\s*\(|\bselect\s+case\b"#,
    ),
    rule(
        "sqli_number_boolean",
        Class::Sqli,
        r#"\d(and|or|xor)([\s(-]|$)|\blike\s+\d"#,
    ),
    rule(
        "sqli_account_statement",
        Class::Sqli,
        r#"\bcreate\s+user\b|\bidentified\s+by\b|\bgrant\s+\w+\s+on\b|\bgroup\s+by\b.+\bhaving\b|\bhaving\s+count\s*\(|\bpg_sleep\b|\bjson_extract\s*\(|\bdcount\s*\("#,
    ),
    // Cross-site scripting.
    rule("xss_script_tag", Class::Xss, r#"<\s*/?\s*script\b"#),
    rule(
        "xss_event_handler",
        Class::Xss,
        r#"(<[a-z!][^>]*|['"\s/])\bon[a-z]{3,}\s*=\s*"#,
    ),
    rule(
        "xss_js_uri",
        Class::Xss,
        r#"(java|vb|live)\s*script\s*:|data\s*:\s*text/html|data\s*:[^,]*;base64"#,
    ),
    rule(
        "xss_encoded_markup",
        Class::Xss,
        r#"&#x0*3c;?|&#0*60;?|\\u003c|\\x3c|\bdata\s*:[^,]{0,40},\s*<"#,
    ),
    rule(
        "xss_unusual_tag",
        Class::Xss,
        r#"<\s*(math|xml|rect|circle|ellipse|path|polygon|line|g|use|foreignobject|animate\w*|set|video|audio|source|track|input|button|keygen|select|option|textarea|form|body|html|head|frame\w*|marquee|blink|xss|x|f|image|picture|canvas|dialog|template|slot|portal|object|param|script\w*|[a-z]+:[a-z]+)[\s/>]"#,
    ),
    rule(
        "xss_dangerous_tag",
        Class::Xss,
        r#"<\s*/?\s*(iframe|frame|frameset|object|embed|applet|meta|base|isindex|bgsound|layer|ilayer|xss|link|style|noscript|title|textarea|xmp|plaintext|vmlframe|v:\w+|import\w*|set|animate\w*|handler|listener)\b|<\?\s*(xml-stylesheet|import|xml:namespace)|<!--|--!?>|\]\]>|<\w[^>]*\b(xmlns|datasrc|datafld|dataformatas|attributename|xlink:href)\b"#,
    ),
    rule(
        "xss_script_call",
        Class::Xss,
        r#"\b(alert|prompt|confirm|eval|settimeout|setinterval|fromcharcode|atob)\s*[(`]|document\s*\.\s*(cookie|domain|write|location)|window\s*\.\s*(location|name|open)|\.innerhtml\b"#,
    ),
    rule(
        "xss_css_expression",
        Class::Xss,
        r#"expression\s*\(|-moz-binding|behavior\s*:|@import|url\s*\(\s*['\x22]?\s*javascript"#,
    ),
    rule(
        "xss_attribute_break",
        Class::Xss,
        r#"['"]\s*>\s*<\s*[a-z]|<[a-z]+[^>]*\b(src|href|action|formaction|srcdoc|background|dynsrc|lowsrc|xlink:href)\s*=\s*['"]?\s*(javascript|vbscript|data|&#)"#,
    ),
    rule(
        "xss_tag_with_payload",
        Class::Xss,
        r#"<\s*(img|image|body|input|video|audio|table|td|div|a|button|select|textarea|keygen|source|object|html|span)\b[^>]*\b(on[a-z]+|style|src|dynsrc|lowsrc|background)\s*=\s*[^>]*(alert|javascript|script|expression|\(|`)"#,
    ),
    // Path traversal and local file inclusion.
    rule(
        "traversal_dot_dot",
        Class::PathTraversal,
        r#"(^|[\\/=\s:;,"'])\.{2,}([\\/;%\x00-\x1f]|(0x)?(2f|5c))|[\\/]\.{2,}($|[\\/;?\x00])|\.[\\/]+\.[\\/]|(0x2e){2}|(%2e){2}"#,
    ),
    rule(
        "traversal_sensitive_file",
        Class::PathTraversal,
        r#"(\betc\W{0,6}(passwd|shadow|group|hosts|issue|motd|crontab|sudoers|subuid|subgid|hostname)|(^|[\s=:])/(etc|usr|var|bin|sbin|opt|private|proc|sys|root|boot|lib)/[\w.+-]+/?|/proc/(self|\d+)/|boot\.ini|win\.ini|system\.ini|[a-z]:[\\/](windows|winnt|boot|inetpub)|\\windows\\|/windows/(system32|win)|system32[\\/]|\.htaccess|\.htpasswd|web\.config|/var/log/|wp-config\.php|/\.ssh/|id_rsa|\.ini\x00|\.conf\x00)"#,
    ),
    rule(
        "traversal_file_scheme",
        Class::PathTraversal,
        r#"\b(file|php|phar|zip|expect|glob|data)://|php://(filter|input)"#,
    ),
    rule("traversal_null_byte", Class::PathTraversal, r#"\x00"#),
    // OS command injection.
    rule(
        "cmd_chained_command",
        Class::CmdInjection,
        r#"([;&|`\n]|\\n|\$\(|\|\|)\s*(/(usr/)?s?bin/)?(cat|ls|id|who|whoami|uname|wget|curl|nc|ncat|netcat|bash|sh|zsh|ksh|csh|ping|sleep|echo|rm|chmod|chown|python[23]?|perl|ruby|php|nslookup|dig|ifconfig|ipconfig|netstat|powershell|cmd|telnet|tftp|busybox|pkill|ps|printenv|xterm|sudo|base64|sh\.exe|cmd\.exe|systeminfo|tasklist|whois|awk|sed|grep|crontab|nohup|socat|mkfifo|xargs|nmap|uptime|hostname|passwd|dir|type|net|netsh|reg|certutil|bitsadmin|wmic|find|gcc|cc|make|system|exec|eval|ver|del|copy|move|attrib|icacls|schtasks|sc|taskkill|rundll32|regsvr32|mshta|cscript|wscript|start)\b(\s+[-/$\w.'"%\\:*]|\s*$|[;&|`)(<>])"#,
    ),
    rule(
        "cmd_substitution",
        Class::CmdInjection,
        r#"\$\(\s*[a-z][\w./-]*[^)]*\)|`\s*(cat|ls|id|whoami|uname|wget|curl|nc|bash|sh|ping|sleep|echo|rm|dig|nslookup|python|perl|ruby|php|cut|dir|type)\b[^`]*`|\$\{ifs\}|\$ifs\b|\$\{(path|home|shell|user):"#,
    ),
    rule(
        "cmd_shellshock",
        Class::CmdInjection,
        r#"\(\s*\)\s*\{\s*(:|_)\s*;\s*\}\s*;"#,
    ),
    rule(
        "cmd_shell_path",
        Class::CmdInjection,
        r#"(/bin/(ba|z|k|c|da)?sh|/usr/bin/(env|perl|python\w*|id|whoami|wget|curl)|cmd(\.exe)?\s+/c\b|powershell(\.exe)?\s+-|\bnc\s+-[a-z]*[elv]|/dev/tcp/|\bsh\s+-c\b)"#,
    ),
    rule(
        "cmd_redirect_download",
        Class::CmdInjection,
        r#"\b(wget|curl|fetch|tftp)\s+(-[\w-]+\s+)*(https?|ftp)://"#,
    ),
    rule(
        "cmd_code_execution",
        Class::CmdInjection,
        r#"\b(system|passthru|shell_exec|popen|proc_open|pcntl_exec|os\.system|subprocess\.\w+|runtime\.getruntime)\s*\(|<!--\s*#\s*exec\b|\bfor\s+(/[a-z]\s+("[^"]*"\s+)?)?%%?\w+\s+in\s*\(|%(systemroot|windir|comspec|userprofile|temp|programfiles)%|\$\(\(|\w+\(\)\s*\{[^}]*\}\s*;|\$\w+\s*\$\w+|\b(sh|bash)\s*\)\s*\d*\s*[<>]"#,
    ),
];

/// Rules over the user agent only.
const AGENT_RULES: &[Rule] = &[
    rule(
        "scanner_user_agent",
        Class::Scanner,
        r#"sql|xss|lfi|rfi|inj|fuzz|scan|map\b|probe|waf\b|recon|hack|pwn|exploit|brute|vuln|securityagent|attack|bandit|truffle|-cop\b|nikto|masscan|zgrab|nuclei|acunetix|netsparker|invicti|burp|dirbuster|\bdirb\b|gobuster|feroxbuster|w3af|arachni|zaproxy|owasp|wapiti|nessus|openvas|qualys|whatweb|jaeles|commix|hydra|skipfish|\bvega\b|paros|webinspect|appscan|appspider|netlab360|censys|shodan|internet-measurement|l9explore|l9tcpid|havij|pangolin|webshag|grabber|morfeus|detectify|intruder|leakix|binaryedge|jorgee|zmeu|ghauri|kadimus|bfac|ironwasp|nettacker|droopescan|hexometer|wprecon|joomscan|sysscan|fimap|tinja|^moz[a-z]*/\d\.[^\d]|^mozlila|^mozila|^mozzila"#,
    ),
    rule(
        "bot_user_agent",
        Class::Bot,
        r#"bot\b|bot/|bot-|bot;|robot|crawl|spider|slurp|scrap|archiv|curl|wget|python|go-http|golang|java/|jakarta|okhttp|libwww|lwp::|perl|ruby|httpclient|http-client|http_request|axios|node-fetch|undici|aiohttp|httpx|guzzle|headless|phantomjs|selenium|puppeteer|playwright|webdriver|monitor|uptime|pingdom|statuscake|site24x7|newrelic|datadog|nagios|zabbix|check_http|feed|rss|podcast|preview|facebookexternalhit|embedly|whatsapp|telegram|slack|discord|skype|ia_archiver|yandex|baidu|bingpreview|duckduck|sogou|exabot|ahrefs|semrush|mj12|dotbot|petal|bytespider|gptbot|ccbot|claude|anthropic|perplexity|cohere|validator|lighthouse|pagespeed|gtmetrix|redbot|w3c_|apache-httpclient|postman|insomnia|winhttp|dalvik|^$|^-$|^mozilla/5\.0 \(compatible\)$|zoominfo|seznam|qwant|ps_daily|linkcheck|link check|nutch|heritrix|wordpress/|mastodon|pleroma|google-|googleother|adsbot|mediapartners|apis-google|feedly|inoreader|newsblur|netcraft|ltx71|panscient|researchscan|coccoc|applebot|yeti|naver|daum|seekport|mojeek|blexbot|grapeshot|proximic|admantx|trendiction|dataprovider|barkrowler|serpstat|screaming frog|sitebulb|oncrawl|deepcrawl|siteimprove|ruxit|catchpoint|dynatrace|gomez|keynote|pingbot|freshping|hetrix|uptimia|better ?uptime|updown\.io|cron-job|webcron|shopify|hubspot|mailchimp|outbrain|taboola|flipboard|tumblr|vkshare|pinterest|linkedinbot|twitterbot|iframely|metauri|quora link|bitlybot|tineye|pcore|cliqz|qwantify|ahc/|reqwest|hackney|winhttprequest|powershell|http\.rb|typhoeus|faraday|rest-client|mechanize|scrapy|colly|libcurl|httpie|\bwget\b|checker|\bcheck\b|parser|downloader|sleuth|screenshot|screen service|metadata|detection|index/|indexer|mobileok|explorer/|larbin|binlar|newspaper/|managewp|blogvault|webflow|termly|legalmonster|citoid|appengine|panopta|netvigie|alertsite|bugsnag|grouphigh|sysomos|novaact|tchelebi|cookie-|textrazor|hatena|fediindex|capsule|ips-agent|\bseo"#,
    ),
];

/// Paths that only scanners and attackers ask for: secrets, version
/// control, backups, admin consoles of software the site may not run.
const PROBE_PATH: &str = r#"(/\.[a-z_][\w.-]*|^/(proc|sys|etc|dev)(/|$)|/(wp-login\.php|wp-admin|wp-includes|wp-content/plugins|wp-json/wp/v2/users|xmlrpc\.php|wp-config|phpmyadmin|pma|myadmin|mysqladmin|sqladmin|dbadmin|adminer|phpinfo\.php|info\.php|test\.php|shell\.php|cmd\.php|c99\.php|r57\.php|webshell|eval-stdin\.php|server-status|server-info|actuator|jmx-console|web-console|manager/html|invoker|hnap1|boaform|cgi-bin/|setup\.cgi|administrator|admin\.php|admin/config|fckeditor|ckfinder|kcfinder|config([._-]\w+)*\.(php|json|ya?ml|inc|bak|old|txt|ini|py|pl|rb|asp|aspx|jsp|js|xml|toml|env|cfg|conf)|configuration\.php|settings\.php|setup\.php|install\.php|local\.xml|secrets?\.(json|ya?ml|txt|env)|credentials(\.json)?|aws[-_]?(key|credentials|secret)s?\.\w+|backup\.(zip|tar|gz|sql|tgz|rar)|(db|dump|database|backup|site|www)\.(sql|zip|tar\.gz|tgz|rar|bak)|\w*\.sql(\.\w+)?$|solr/admin|_ignition|telescope|vendor/phpunit|owa/|autodiscover|remote/login|\+cscoe\+|global-protect|dana-na|console/|axis2|debug/default|elmah\.axd|trace\.axd|_profiler|_debugbar|storage/logs|sftp-config\.json|id_rsa|composer\.(json|lock)$|package(-lock)?\.json$|yarn\.lock$|pyproject\.toml$|gruntfile\.js$|gulpfile\.js$|gemfile(\.lock)?$|requirements\.txt$|dockerfile$|docker-compose\.ya?ml$|npm-debug\.log$|\w*error_?s?\.log$|logs?/\w*access\.log$|\.bak$|\.old$|\.swp$|~$))"#;

struct Compiled {
    payload: RegexSet,
    agent: RegexSet,
    probe: Regex,
}

static COMPILED: LazyLock<Compiled> = LazyLock::new(|| {
    let set = |rules: &[Rule]| {
        RegexSetBuilder::new(rules.iter().map(|r| r.pattern))
            .case_insensitive(true)
            .unicode(false)
            .size_limit(64 << 20)
            .dfa_size_limit(64 << 20)
            .build()
            .expect("the security rules compile")
    };
    Compiled {
        payload: set(PAYLOAD_RULES),
        agent: set(AGENT_RULES),
        probe: regex::RegexBuilder::new(PROBE_PATH)
            .case_insensitive(true)
            .build()
            .expect("the probe-path rule compiles"),
    }
});

/// Classifies one request.
pub fn classify(request: &Request<'_>) -> Verdict {
    let compiled = &*COMPILED;
    let (raw_path, path_query) = match request.path.split_once('?') {
        Some((p, q)) => (p, q),
        None => (request.path, ""),
    };
    let path = decode(raw_path, false);

    let mut values: Vec<String> = Vec::new();
    for query in [path_query, request.query] {
        form_values(query, &mut values);
    }
    let body = request.body.trim();
    if !body.is_empty() {
        if request.content_type.contains("x-www-form-urlencoded")
            || (request.content_type.is_empty() && !body.starts_with(['{', '[', '<']))
        {
            form_values(body, &mut values);
        } else if request.content_type.starts_with("multipart/") || body.starts_with("--") {
            values.extend(body.lines().map(str::to_string));
        } else {
            values.push(decode(body, false));
        }
    }
    let ua = request.user_agent.map(str::trim);
    values.extend(ua.map(str::to_string));
    let unescaped: Vec<String> = values
        .iter()
        .chain([&path])
        .flat_map(|v| {
            let html = html_unescape(v);
            let twice = html.as_deref().and_then(html_unescape);
            [
                html,
                twice,
                escapes_unescaped(v),
                high_bit_folded(v),
                sql_comments_removed(v),
            ]
        })
        .flatten()
        .collect();
    values.extend(unescaped);

    let mut rules: Vec<&'static str> = Vec::new();
    let add = |name: &'static str, rules: &mut Vec<&'static str>| {
        if !rules.contains(&name) {
            rules.push(name);
        }
    };
    for value in values.iter().filter(|v| !v.is_empty()) {
        for i in compiled.payload.matches(value.as_bytes()).iter() {
            add(PAYLOAD_RULES[i].name, &mut rules);
        }
    }
    // A sensitive file named by the path itself, with no way out of the
    // web root, is a probe for a file left exposed, not a traversal.
    let mut probe = false;
    for i in compiled.payload.matches(path.as_bytes()).iter() {
        match PAYLOAD_RULES[i].name {
            "traversal_sensitive_file" => probe = true,
            name => add(name, &mut rules),
        }
    }
    // The payload class with the most weight of matching rules; ties go to the
    // earlier class in `Class::PAYLOADS`.
    let mut class = Class::Benign;
    let mut best = 0;
    for c in Class::PAYLOADS {
        let n: u32 = PAYLOAD_RULES
            .iter()
            .filter(|r| r.class == c && rules.contains(&r.name))
            .map(|r| weight(r.name))
            .sum();
        if n > best {
            best = n;
            class = c;
        }
    }

    let probed = path.strip_prefix("/.well-known").unwrap_or(&path);
    if probe || compiled.probe.is_match(probed) {
        add("scanner_probe_path", &mut rules);
    }
    if let Some(ua) = ua {
        for i in compiled.agent.matches(ua.as_bytes()).iter() {
            add(AGENT_RULES[i].name, &mut rules);
        }
    }
    if class == Class::Benign {
        if rules.iter().any(|r| r.starts_with("scanner_")) {
            class = Class::Scanner;
        } else if rules.iter().any(|r| r.starts_with("bot_")) {
            class = Class::Bot;
        }
    }
    Verdict { class, rules }
}

/// The values of an `a=1&b=2` string, decoded; keys are kept too, as
/// attackers put payloads in parameter names.
fn form_values(s: &str, out: &mut Vec<String>) {
    if s.is_empty() {
        return;
    }
    for pair in s.split('&') {
        match pair.split_once('=') {
            Some((k, v)) => {
                if !is_plain(k) {
                    out.push(decode(k, true));
                }
                out.push(decode(v, true));
            }
            None => out.push(decode(pair, true)),
        }
    }
}

fn is_plain(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Percent-decoding until nothing changes (at most three rounds, for
/// double and triple encoding), with `%uXXXX` and over-long UTF-8 forms.
pub fn decode(s: &str, plus_is_space: bool) -> String {
    let mut current: Cow<'_, str> = Cow::Borrowed(s);
    for round in 0..3 {
        let pluses = plus_is_space && round == 0 && current.contains('+');
        if !current.contains('%') && !pluses {
            break;
        }
        let next = decode_once(&current, plus_is_space && round == 0);
        if next == *current {
            break;
        }
        current = Cow::Owned(next);
    }
    straight_quotes(current.into_owned())
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn decode_once(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 6 <= b.len() && (b[i + 1] == b'u' || b[i + 1] == b'U') => {
                let code = s
                    .get(i + 2..i + 6)
                    .and_then(|h| u32::from_str_radix(h, 16).ok());
                match code.and_then(char::from_u32) {
                    Some(c) => {
                        let c = fullwidth_to_ascii(c);
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        i += 6;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'%' if i + 3 <= b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    overlong_to_ascii(&out)
}

/// `U+FF0F` and the other full-width forms that some servers fold to ASCII.
fn fullwidth_to_ascii(c: char) -> char {
    match c as u32 {
        0xFF01..=0xFF5E => char::from_u32(c as u32 - 0xFF01 + 0x21).unwrap_or(c),
        0x2215 | 0x2044 => '/',
        0x2216 => '\\',
        _ => c,
    }
}

/// Over-long two-byte UTF-8 (`C0 AF` for `/`) decoded the way old, lax
/// decoders did; everything else is read as UTF-8 with replacement.
fn overlong_to_ascii(bytes: &[u8]) -> String {
    let mut cleaned: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if (b == 0xC0 || b == 0xC1) && i + 1 < bytes.len() && bytes[i + 1] & 0xC0 == 0x80 {
            cleaned.push(((b & 0x1F) << 6) | (bytes[i + 1] & 0x3F));
            i += 2;
        } else if b == 0xF0
            && i + 3 < bytes.len()
            && bytes[i + 1] == 0x80
            && bytes[i + 2] == 0x80
            && bytes[i + 3] & 0xC0 == 0x80
        {
            cleaned.push(bytes[i + 3] & 0x3F);
            i += 4;
        } else if b == 0xE0
            && i + 2 < bytes.len()
            && bytes[i + 1] & 0xE0 == 0x80
            && bytes[i + 2] & 0xC0 == 0x80
        {
            let c = (u32::from(bytes[i + 1] & 0x3F) << 6) | u32::from(bytes[i + 2] & 0x3F);
            if c < 0x80 {
                cleaned.push(c as u8);
            } else {
                cleaned.extend_from_slice(&bytes[i..i + 3]);
            }
            i += 3;
        } else {
            cleaned.push(b);
            i += 1;
        }
    }
    String::from_utf8_lossy(&cleaned).into_owned()
}

/// The value with HTML character references decoded, when it has any.
fn html_unescape(s: &str) -> Option<String> {
    if !s.contains('&') {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let end = rest[1..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '#'))
            .map(|e| e + 1)
            .unwrap_or(rest.len());
        let name = &rest[1..end];
        let decoded = if let Some(num) = name.strip_prefix('#') {
            let value = match num.strip_prefix(['x', 'X']) {
                Some(h) => u32::from_str_radix(h, 16).ok(),
                None => num.parse().ok(),
            };
            value.and_then(char::from_u32)
        } else {
            match name.to_ascii_lowercase().as_str() {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "amp" => Some('&'),
                "colon" => Some(':'),
                "lpar" => Some('('),
                "rpar" => Some(')'),
                "tab" => Some('\t'),
                "newline" => Some('\n'),
                "sol" => Some('/'),
                _ => None,
            }
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = rest[end..].strip_prefix(';').unwrap_or(&rest[end..]);
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    // Control characters inside a word (`jav&#x09;ascript:`) are ignored
    // by browsers.
    let squeezed: String = out
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r' | '\0'))
        .collect();
    (squeezed != s).then_some(squeezed)
}

/// The value with JavaScript and CSS escapes (`\u003c`, `\x3c`, `\003c`)
/// decoded, when it has any.
fn escapes_unescaped(s: &str) -> Option<String> {
    if !s.contains('\\') {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (digits, skip) = if let Some(h) = after.strip_prefix(['u', 'U']) {
            (h.get(..4), 5)
        } else if let Some(h) = after.strip_prefix(['x', 'X']) {
            (h.get(..2), 3)
        } else {
            let n = after
                .bytes()
                .take(6)
                .take_while(u8::is_ascii_hexdigit)
                .count();
            (after.get(..n).filter(|d| d.len() >= 2), n)
        };
        match digits
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .and_then(char::from_u32)
        {
            Some(c) => {
                out.push(c);
                rest = &after[skip..];
            }
            None => {
                out.push('\\');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    (out != s).then_some(out)
}

/// Latin-1 characters with their high bit cleared (`¼script¾` is
/// `<script>` to a decoder that drops the eighth bit).
fn high_bit_folded(s: &str) -> Option<String> {
    if !s.chars().any(|c| ('\u{a0}'..='\u{ff}').contains(&c)) {
        return None;
    }
    Some(
        s.chars()
            .map(|c| {
                if ('\u{a0}'..='\u{ff}').contains(&c) {
                    char::from(c as u8 & 0x7f)
                } else {
                    c
                }
            })
            .collect(),
    )
}

/// The value with SQL comments (`/* */`, `#` and `--` to the end of a
/// line) replaced by spaces, when it has any that end before the value.
fn sql_comments_removed(s: &str) -> Option<String> {
    static COMMENTS: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?s)/\*.*?\*/|#[^\n]*\n|--[^\n]*\n").expect("the comment pattern compiles")
    });
    let out = COMMENTS.replace_all(s, " ");
    matches!(out, Cow::Owned(_)).then(|| out.into_owned())
}

/// Typographic quotes as the ASCII quotes that databases also accept.
fn straight_quotes(s: String) -> String {
    if s.contains(['\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}']) {
        s.replace(['\u{2018}', '\u{2019}'], "'")
            .replace(['\u{201c}', '\u{201d}'], "\"")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(path: &str, query: &str, ua: &str) -> Class {
        classify(&Request {
            method: "GET",
            path,
            query,
            user_agent: Some(ua),
            ..Request::default()
        })
        .class
    }

    const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/136.0 Safari/537.36";

    #[test]
    fn decodes_before_matching() {
        assert_eq!(decode("%253Cscript%253E", false), "<script>");
        assert_eq!(decode("a+b%20c", true), "a b c");
        assert_eq!(decode("..%c0%af..%c0%afetc", false), "../../etc");
        assert_eq!(decode("%uff0e%uff0e%u2215", false), "../");
        assert_eq!(
            html_unescape("&lt;img src=x onerror=alert(1)&gt;").as_deref(),
            Some("<img src=x onerror=alert(1)>")
        );
    }

    #[test]
    fn attacks_by_class() {
        assert_eq!(
            class("/items", "id=1%27%20OR%20%271%27%3D%271", BROWSER),
            Class::Sqli
        );
        assert_eq!(
            class(
                "/items",
                "id=1+UNION+ALL+SELECT+username,password+FROM+users--",
                BROWSER
            ),
            Class::Sqli
        );
        assert_eq!(
            class("/search", "q=%3Csvg%2Fonload%3Dalert(1)%3E", BROWSER),
            Class::Xss
        );
        assert_eq!(
            class(
                "/search",
                "q=%26lt%3Bscript%26gt%3Balert(1)%26lt%3B%2Fscript%26gt%3B",
                BROWSER
            ),
            Class::Xss
        );
        assert_eq!(
            class(
                "/download",
                "file=..%252f..%252f..%252fetc%252fpasswd",
                BROWSER
            ),
            Class::PathTraversal
        );
        assert_eq!(
            class("/ping", "host=127.0.0.1%3Bcat+%2Fetc%2Fpasswd", BROWSER),
            Class::CmdInjection
        );
        assert_eq!(
            class("/ping", "host=%24(whoami)", BROWSER),
            Class::CmdInjection
        );
    }

    #[test]
    fn who_is_asking() {
        assert_eq!(class("/.git/config", "", BROWSER), Class::Scanner);
        assert_eq!(
            class("/", "", "sqlmap/1.7.2#stable (https://sqlmap.org)"),
            Class::Scanner
        );
        assert_eq!(
            class(
                "/",
                "",
                "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
            ),
            Class::Bot
        );
        assert_eq!(class("/", "", "curl/8.5.0"), Class::Bot);
        // A payload outranks the scanner that sent it.
        assert_eq!(class("/", "id=1'+or+'1'='1", "sqlmap/1.7"), Class::Sqli);
    }

    #[test]
    fn hard_but_harmless_values_pass() {
        for q in [
            "q=O%27Brien+and+sons",
            "q=select+comfort+mattress",
            "q=1950%27s+dresses",
            "q=cat+food+grain+free",
            "q=%22sweater+dress%22+AND+%22christmas%22",
            "html=%3Cp%3EHello+%3Cstrong%3Eworld%3C%2Fstrong%3E%3C%2Fp%3E",
            "next=%2Fdashboard%3Ftab%3D2",
        ] {
            let verdict = classify(&Request {
                path: "/search",
                query: q,
                user_agent: Some(BROWSER),
                ..Request::default()
            });
            assert_eq!(verdict.class, Class::Benign, "{q}: {:?}", verdict.rules);
        }
        assert_eq!(
            class("/.well-known/security.txt", "", BROWSER),
            Class::Benign
        );
    }

    #[test]
    fn rules_are_named() {
        let v = classify(&Request {
            path: "/wp-login.php",
            query: "redirect=%3Cscript%3Ealert(1)%3C/script%3E",
            user_agent: Some("nikto"),
            ..Request::default()
        });
        assert_eq!(v.class, Class::Xss);
        for r in ["xss_script_tag", "scanner_probe_path", "scanner_user_agent"] {
            assert!(v.rules.contains(&r), "{r} missing from {:?}", v.rules);
        }
    }
}

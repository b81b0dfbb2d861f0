//! Realistic traffic: many tenants with Zipf-skewed volume (one hot tenant exercises write
//! sharding), several sites and forms each, and text-heavy payloads from about 0.5 to 16 KiB.
//!
//! Text is generated, not copied: prose drawn from a vocabulary of common English words with
//! Zipf-distributed frequencies (rank r has weight 1/r^1.07, like natural text), in sentences of
//! varied length. Uniform choice from a small word list compresses far better than real text
//! and would flatter the storage figures.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use serde_json::{json, Value};

/// Common English words, most frequent first (the order sets their Zipf rank).
const VOCABULARY: &str = "the of and to a in is you that it he was for on are as with his they i at be this \
have from or one had by word but not what all were we when your can said there use an each which she do how \
their if will up other about out many then them these so some her would make like him into time has look two \
more write go see number no way could people my than first water been call who oil its now find long down day \
did get come made may part over new sound take only little work know place year live me back give most very \
after thing our just name good sentence man think say great where help through much before line right too mean \
old any same tell boy follow came want show also around form three small set put end does another well large \
must big even such because turn here why ask went men read need land different home us move try kind hand \
picture again change off play spell air away animal house point page letter mother answer found study still \
learn should website project quote price budget service hosting design support meeting booking order delivery \
invoice account question available morning afternoon tuesday thursday please thanks regards team company \
office client contract schedule update plugin page launch review feedback experience position application \
interview salary reference portfolio skills role start date weekend garden kitchen bathroom repair install \
estimate visit call email phone address city street appointment insurance policy claim patient doctor course \
student lesson event ticket venue guests menu wedding party table room night stay arrival departure";

const FIRST: &[&str] = &[
    "Anna", "Ben", "Chloé", "Dmitri", "Eva", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Lars", "Maya", "Noor",
    "Oscar", "Priya", "Quentin", "Rosa", "Sven", "Tariq", "Uma", "Viktor", "Wen", "Yusuf", "Zoë",
];
const LAST: &[&str] = &[
    "Smith", "Müller", "García", "Okafor", "Nguyen", "Rossi", "Kowalski", "Dubois", "Jensen", "Silva", "Yamamoto",
    "O'Brien", "Novak", "Haddad", "Larsen",
];

/// The kinds of forms WordPress sites carry, with their typical sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormKind {
    /// Short: an email address and a consent box with its wording (~0.5 KiB with metadata).
    Newsletter,
    /// A name, contact details and a message of a few sentences to a few paragraphs.
    Contact,
    /// A quote request: structured fields and a project description.
    Quote,
    /// A job application: a long cover letter (up to ~16 KiB).
    Application,
}

impl FormKind {
    pub fn id(self) -> &'static str {
        match self {
            FormKind::Newsletter => "newsletter",
            FormKind::Contact => "contact",
            FormKind::Quote => "quote",
            FormKind::Application => "application",
        }
    }
    /// Target payload bytes: log-uniform in the kind's range.
    fn target_bytes(self, rng: &mut impl Rng) -> usize {
        let (lo, hi): (f64, f64) = match self {
            FormKind::Newsletter => (450.0, 700.0),
            FormKind::Contact => (800.0, 4_000.0),
            FormKind::Quote => (1_200.0, 6_000.0),
            FormKind::Application => (4_000.0, 16_000.0),
        };
        (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp() as usize
    }
}

/// The mix of form kinds: mostly contact messages, some short, some long.
const MIX: &[(FormKind, u32)] =
    &[(FormKind::Contact, 50), (FormKind::Quote, 20), (FormKind::Newsletter, 20), (FormKind::Application, 10)];

/// Draws prose with natural word frequencies.
#[derive(Debug)]
pub struct Prose {
    words: Vec<&'static str>,
    zipf: Zipf<f64>,
}

impl Default for Prose {
    fn default() -> Self {
        let words: Vec<&'static str> = VOCABULARY.split_whitespace().collect();
        let zipf = Zipf::new(words.len() as f64, 1.07).expect("valid Zipf parameters");
        Self { words, zipf }
    }
}

impl Prose {
    fn word(&self, rng: &mut impl Rng) -> &'static str {
        let rank = self.zipf.sample(rng) as usize;
        self.words[rank.clamp(1, self.words.len()) - 1]
    }

    pub fn sentence(&self, rng: &mut impl Rng) -> String {
        let n = rng.random_range(5..22);
        let mut s = String::new();
        for i in 0..n {
            let w = self.word(rng);
            if i == 0 {
                let mut c = w.chars();
                if let Some(f) = c.next() {
                    s.extend(f.to_uppercase());
                    s.push_str(c.as_str());
                }
            } else {
                s.push_str(if rng.random_bool(0.08) { ", " } else { " " });
                s.push_str(w);
            }
        }
        s.push(*['.', '.', '.', '?', '!'].choose(rng).expect("non-empty"));
        s
    }

    /// Paragraphs of prose of about `bytes`.
    pub fn text(&self, rng: &mut impl Rng, bytes: usize) -> String {
        let mut t = String::new();
        while t.len() < bytes {
            if !t.is_empty() {
                t.push_str(if rng.random_bool(0.2) { "\n\n" } else { " " });
            }
            t.push_str(&self.sentence(rng));
        }
        t
    }
}

/// One tenant of the generated population.
#[derive(Debug, Clone)]
pub struct TenantPlan {
    pub id: String,
    pub sites: Vec<String>,
    pub forms: Vec<FormKind>,
}

/// The population and the generator.
#[derive(Debug)]
pub struct Traffic {
    pub tenants: Vec<TenantPlan>,
    tenant_zipf: Zipf<f64>,
    prose: Prose,
    rng: rand::rngs::StdRng,
    /// Real payloads to send instead of generated prose (`--corpus`), drawn at random.
    corpus: Vec<Value>,
}

/// One generated submission, before it is signed or enqueued.
#[derive(Debug, Clone)]
pub struct Generated {
    pub tenant: usize,
    pub site: String,
    pub form: FormKind,
    pub payload: Value,
}

impl Traffic {
    /// `tenants` tenants named `<prefix>-000`…; tenant rank r gets a share ∝ 1/r^`skew`.
    pub fn new(prefix: &str, tenants: usize, sites_per_tenant: usize, skew: f64, seed: u64) -> Traffic {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let plans = (0..tenants)
            .map(|i| {
                let id = format!("{prefix}-{i:03}");
                let sites = (0..sites_per_tenant).map(|s| format!("site{s}.{id}.example.com")).collect();
                // Every tenant has a contact form; most have the others too.
                let forms: Vec<FormKind> =
                    MIX.iter().map(|(k, _)| *k).filter(|k| *k == FormKind::Contact || rng.random_bool(0.7)).collect();
                TenantPlan { id, sites, forms }
            })
            .collect();
        Traffic {
            tenants: plans,
            tenant_zipf: Zipf::new(tenants.max(1) as f64, skew).expect("valid Zipf parameters"),
            prose: Prose::default(),
            rng,
            corpus: Vec::new(),
        }
    }

    /// Sends these payloads (e.g. the held-out real-text corpus, `loadtest/corpus/`) instead of
    /// generated ones, each with a fresh `submitted_at`. Tenants, sites and forms are as before.
    pub fn with_corpus(mut self, payloads: Vec<Value>) -> Traffic {
        self.corpus = payloads.into_iter().filter(Value::is_object).collect();
        self
    }

    pub fn next(&mut self, submitted_at: &str) -> Generated {
        let t = (self.tenant_zipf.sample(&mut self.rng) as usize).clamp(1, self.tenants.len()) - 1;
        let plan = &self.tenants[t];
        let site = plan.sites.choose(&mut self.rng).expect("sites").clone();
        let weights: Vec<(FormKind, u32)> = MIX.iter().filter(|(k, _)| plan.forms.contains(k)).copied().collect();
        let form = weights.choose_weighted(&mut self.rng, |(_, w)| *w).expect("forms").0;
        let payload = if self.corpus.is_empty() {
            let target = form.target_bytes(&mut self.rng);
            self.payload(form, target, submitted_at)
        } else {
            let mut p = self.corpus.choose(&mut self.rng).expect("non-empty").clone();
            p["submitted_at"] = Value::String(submitted_at.to_owned());
            p
        };
        Generated { tenant: t, site, form, payload }
    }

    fn payload(&mut self, form: FormKind, target: usize, submitted_at: &str) -> Value {
        let rng = &mut self.rng;
        let first = *FIRST.choose(rng).expect("names");
        let last = *LAST.choose(rng).expect("names");
        let email = format!("{}.{}@example.com", first.to_lowercase(), last.to_lowercase().replace('\'', ""));
        let mut fields = match form {
            FormKind::Newsletter => json!({ "email": email, "consent": true, "list": "monthly", "consent_text": "" }),
            FormKind::Contact => json!({
                "name": format!("{first} {last}"), "email": email,
                "phone": format!("+44 20 7946 {:04}", rng.random_range(0..10_000)),
                "subject": self.prose.sentence(rng), "message": "",
            }),
            FormKind::Quote => {
                let budget = *["< 5k", "5-10k", "10-25k", "> 25k"].choose(rng).expect("budgets");
                json!({
                "name": format!("{first} {last}"), "email": email, "company": format!("{last} Ltd"),
                "budget": budget, "services": ["design", "hosting"],
                "start": "next quarter", "message": "",
                })
            }
            FormKind::Application => json!({
                "name": format!("{first} {last}"), "email": email, "position": self.prose.sentence(rng),
                "experience_years": rng.random_range(0..30), "cover_letter": "",
            }),
        };
        let mut payload = json!({
            "fields": fields.clone(),
            "meta": {
                "page_url": format!("https://www.example.com/{}/?ref={}", form.id(), rng.random_range(0..1000)),
                "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
                "ip": format!("203.0.113.{}", rng.random_range(1..255)),
                "plugin": "form-bridge-wp", "plugin_version": "1.4.2",
            },
            "submitted_at": submitted_at,
        });
        let base = payload.to_string().len();
        let text_field = match form {
            FormKind::Newsletter => "consent_text",
            FormKind::Application => "cover_letter",
            _ => "message",
        };
        let text = self.prose.text(rng, target.saturating_sub(base).max(40));
        fields[text_field] = Value::String(text);
        payload["fields"] = fields;
        payload
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_span_half_a_kib_to_16_kib_and_volume_is_skewed() {
        let mut t = Traffic::new("lt", 20, 3, 1.1, 7);
        let mut sizes = Vec::new();
        let mut per_tenant = vec![0usize; 20];
        for _ in 0..2_000 {
            let g = t.next("2026-11-25T10:00:00Z");
            sizes.push(g.payload.to_string().len());
            per_tenant[g.tenant] += 1;
            assert!(t.tenants[g.tenant].sites.contains(&g.site));
        }
        sizes.sort();
        assert!(sizes[0] >= 400 && sizes[0] < 800, "smallest {}", sizes[0]);
        assert!(*sizes.last().unwrap() > 12_000 && *sizes.last().unwrap() < 17_500, "largest {:?}", sizes.last());
        let median = sizes[sizes.len() / 2];
        assert!((1_000..5_000).contains(&median), "median {median}");
        assert!(per_tenant[0] > 4 * per_tenant[19], "the first tenant is hot: {per_tenant:?}");
    }

    #[test]
    fn word_frequencies_are_skewed_like_natural_text() {
        let p = Prose::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let text = p.text(&mut rng, 200_000).to_lowercase();
        let count = |w: &str| text.split(|c: char| !c.is_alphabetic()).filter(|x| *x == w).count();
        let (the, of, arrival) = (count("the"), count("of"), count("arrival"));
        assert!(the > of && of > 10 * arrival.max(1), "the {the}, of {of}, arrival {arrival}");
    }
}

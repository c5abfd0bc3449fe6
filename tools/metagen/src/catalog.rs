//! The distribution catalog and the per-package field generator.
//!
//! Everything here mimics what foojay's disco API returns and what Kopi
//! stores in its metadata cache: distribution names and URL layouts follow
//! the real vendors', version numbers follow the real release trains (LTS
//! trains are more frequent, Java 8 has `8.0.<update>` style versions,
//! Corretto and Zulu have their own distribution version schemes), and the
//! platform mix covers the operating systems, architectures, archive types
//! and C libraries that foojay lists.

use crate::rng::SplitMix64;

/// How a distribution's `distribution` field is serialised by Kopi.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistKind {
    /// A distribution Kopi knows by name: `"distribution": "temurin"`.
    Known,
    /// Any other vendor: `"distribution": {"other": "microsoft"}`.
    Other,
}

/// Checksum style published by a vendor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// A SHA-256 digest is known.
    Sha256,
    /// A SHA-1 digest is known.
    Sha1,
    /// Only the checksum type is known (`"checksum": null`).
    TypeOnly(&'static str),
    /// Mostly nothing, sometimes an md5 type (Corretto in the sample).
    Sparse,
}

/// One distribution of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct DistSpec {
    /// Map key and name (`"temurin"`).
    pub key: &'static str,
    /// Serialisation of the `distribution` field.
    pub kind: DistKind,
    /// Relative share of the packages in a generated document.
    pub weight: u32,
    /// Lowest and highest Java feature release the vendor ships.
    pub majors: (u32, u32),
    /// Whether the vendor also ships JRE packages.
    pub jre: bool,
    /// Percentage of packages with JavaFX bundled.
    pub fx_percent: u64,
    /// Checksum style.
    pub checksum: Checksum,
    /// Whether versions carry a `build` number.
    pub builds: bool,
    /// Whether the vendor builds for the exotic architectures too.
    pub wide_platforms: bool,
    /// Extra synonyms foojay lists for this distribution.
    pub aliases: &'static [&'static str],
}

// A positional row constructor keeps the catalog table below readable.
#[allow(clippy::too_many_arguments)]
const fn d(
    key: &'static str,
    kind: DistKind,
    weight: u32,
    majors: (u32, u32),
    jre: bool,
    fx_percent: u64,
    checksum: Checksum,
    builds: bool,
    wide_platforms: bool,
    aliases: &'static [&'static str],
) -> DistSpec {
    DistSpec {
        key,
        kind,
        weight,
        majors,
        jre,
        fx_percent,
        checksum,
        builds,
        wide_platforms,
        aliases,
    }
}

use Checksum::{Sha1, Sha256, Sparse, TypeOnly};
use DistKind::{Known, Other};

/// All distributions, in output order.
#[rustfmt::skip]
pub const CATALOG: &[DistSpec] = &[
    // key, kind, weight, majors, jre, fx %, checksum, builds, wide platforms, aliases
    d("corretto", Known, 12, (8, 25), false, 6, Sparse, true, false,
      &["amazon", "aws", "amazon_corretto", "corretto_jdk"]),
    d("microsoft", Other, 5, (11, 25), false, 0, TypeOnly("sha256"), false, false,
      &["msopenjdk", "ms_openjdk", "microsoft_build_of_openjdk"]),
    d("temurin", Known, 30, (8, 25), true, 0, Sha256, true, true,
      &["adoptium", "eclipse_temurin", "adopt_temurin", "adoptopenjdk"]),
    d("zulu", Known, 20, (6, 25), true, 18, Sha256, true, true,
      &["azul", "zulucore", "zulu_core", "azul_zulu"]),
    d("liberica", Known, 14, (8, 25), true, 25, Sha1, true, true,
      &["bellsoft", "liberica_native", "bellsoft_liberica"]),
    d("sap_machine", Known, 6, (11, 25), true, 0, Sha256, false, true,
      &["sap", "sapmachine"]),
    d("semeru", Known, 5, (8, 25), true, 0, Sha256, true, true,
      &["ibm_semeru", "openj9", "semeru_certified"]),
    d("dragonwell", Known, 3, (8, 21), false, 0, Sha256, false, false,
      &["alibaba", "alibaba_dragonwell"]),
    d("kona", Known, 3, (8, 21), false, 0, TypeOnly("md5"), true, false,
      &["tencent", "tencent_kona"]),
    d("graalvm_community", Other, 4, (17, 25), false, 0, Sha256, false, false,
      &["graalvm_ce", "graal_community"]),
    d("mandrel", Known, 2, (17, 24), false, 0, Sha256, false, false,
      &["red_hat_mandrel"]),
    d("oracle_open_jdk", Other, 5, (9, 26), false, 0, Sha256, true, false,
      &["openjdk", "oracle_openjdk", "jdk_java_net"]),
    d("graalvm_ce16", Other, 1, (21, 21), false, 0, TypeOnly("sha256"), false, false,
      &["graalvm_ce_16"]),
];

/// A parsed-back-able Java version as Kopi stores it.
#[derive(Debug, Clone, Default)]
pub struct Version {
    /// Dotted numeric components (`[21, 0, 3]`).
    pub components: Vec<u32>,
    /// Build number(s), if published.
    pub build: Option<Vec<u32>>,
    /// Pre-release tag, e.g. `"ea"`.
    pub pre_release: Option<&'static str>,
}

/// One package of the cache, i.e. one downloadable JDK/JRE archive.
#[derive(Debug, Clone)]
pub struct Package {
    /// 32 lowercase hex digits.
    pub id: String,
    /// Distribution name.
    pub distribution: &'static str,
    /// Java version.
    pub version: Version,
    /// Vendor's own version.
    pub distribution_version: Version,
    /// CPU architecture.
    pub architecture: &'static str,
    /// Operating system.
    pub operating_system: &'static str,
    /// `jdk` or `jre`.
    pub package_type: &'static str,
    /// Archive format.
    pub archive_type: &'static str,
    /// Where to download it.
    pub download_url: String,
    /// Published digest, if any.
    pub checksum: Option<String>,
    /// Digest algorithm, if any.
    pub checksum_type: Option<&'static str>,
    /// Archive size in bytes.
    pub size: u64,
    /// C library flavour.
    pub lib_c_type: &'static str,
    /// JavaFX included.
    pub javafx_bundled: bool,
    /// `lts`, `mts` or `sts`.
    pub term_of_support: &'static str,
    /// `ga` or `ea`.
    pub release_status: &'static str,
    /// Whether this is the newest build of its train.
    pub latest_build_available: bool,
}

fn is_lts(major: u32) -> bool {
    matches!(major, 8 | 11 | 17 | 21 | 25)
}

fn pick_major(rng: &mut SplitMix64, (lo, hi): (u32, u32)) -> u32 {
    // Java 9 and 10 were short-lived; only vendors starting there ship them.
    let majors: Vec<u32> = (lo..=hi)
        .filter(|&m| lo >= 9 || (m != 9 && m != 10))
        .collect();
    let weights: Vec<u32> = majors
        .iter()
        .map(|&m| if is_lts(m) { 10 } else { 2 })
        .collect();
    majors[rng.weighted(&weights)]
}

fn max_patch(major: u32) -> u64 {
    match major {
        8 => 462,
        11 => 28,
        17 => 16,
        21 => 8,
        6 | 7 => 350,
        25 => 1,
        _ => 2,
    }
}

struct Platform {
    os: &'static str,
    arch: &'static str,
    archive: &'static str,
    libc: &'static str,
}

fn pick_platform(rng: &mut SplitMix64, wide: bool) -> Platform {
    let oses = ["linux", "windows", "macos", "alpine_linux", "aix"];
    let os = oses[rng.weighted(&[50, 20, 20, 9, if wide { 1 } else { 0 }])];
    let arch = match os {
        "linux" if wide => [
            "x64", "aarch64", "arm32", "ppc64le", "s390x", "riscv64", "x86",
        ][rng.weighted(&[40, 30, 8, 8, 6, 5, 3])],
        "windows" if wide => ["x64", "x86", "aarch64"][rng.weighted(&[75, 15, 10])],
        "aix" => "ppc64",
        _ => ["x64", "aarch64"][rng.weighted(&[55, 45])],
    };
    let archive = match os {
        "linux" => ["targz", "rpm", "deb"][rng.weighted(&[85, 8, 7])],
        "windows" => ["zip", "msi"][rng.weighted(&[70, 30])],
        "macos" => ["targz", "pkg", "dmg"][rng.weighted(&[60, 25, 15])],
        _ => "targz",
    };
    let libc = match os {
        "linux" => "glibc",
        "alpine_linux" => "musl",
        "windows" => "c_std_lib",
        _ => "libc",
    };
    Platform {
        os,
        arch,
        archive,
        libc,
    }
}

fn ext(archive: &str) -> &'static str {
    match archive {
        "targz" => "tar.gz",
        "zip" => "zip",
        "msi" => "msi",
        "pkg" => "pkg",
        "dmg" => "dmg",
        "rpm" => "rpm",
        _ => "deb",
    }
}

fn dotted(components: &[u32]) -> String {
    let parts: Vec<String> = components.iter().map(u32::to_string).collect();
    parts.join(".")
}

/// Generate one package of `spec`, consuming randomness from `rng`.
pub fn package(rng: &mut SplitMix64, spec: &DistSpec) -> Package {
    let mut id = String::with_capacity(32);
    rng.hex_into(&mut id, 32);

    let major = pick_major(rng, spec.majors);
    let patch = rng.range(0, max_patch(major)) as u32;
    let components = if major <= 8 {
        vec![major, 0, patch]
    } else if patch == 0 && rng.chance(50) {
        vec![major]
    } else if rng.chance(5) {
        vec![major, 0, patch, 1]
    } else {
        vec![major, 0, patch]
    };
    let build_no = if patch == 0 && major > 8 {
        rng.range(30, 40) as u32
    } else if major <= 8 {
        rng.range(1, 10) as u32
    } else {
        rng.range(5, 13) as u32
    };
    let ea = rng.chance(3);
    let version = Version {
        components: components.clone(),
        build: spec.builds.then(|| vec![build_no]),
        pre_release: ea.then_some("ea"),
    };

    let dv_components = match spec.key {
        "corretto" if major <= 8 => vec![8, patch, build_no, rng.range(1, 3) as u32],
        "corretto" => {
            let mut c = components.clone();
            c.resize(3, 0);
            c.extend([build_no, rng.range(1, 3) as u32]);
            c
        }
        "zulu" => vec![
            major + rng.range(0, 13) as u32,
            10 + patch * 3 + rng.range(0, 2) as u32,
            rng.range(11, 29) as u32,
        ],
        "graalvm_ce16" => vec![21, rng.range(0, 3) as u32],
        _ => components.clone(),
    };
    let distribution_version = Version {
        components: dv_components,
        build: None,
        pre_release: None,
    };

    let platform = pick_platform(rng, spec.wide_platforms);
    let jre = spec.jre && rng.chance(35);
    let package_type = if jre { "jre" } else { "jdk" };
    let javafx_bundled = rng.chance(spec.fx_percent);
    let url = download_url(
        rng,
        spec,
        &version,
        &distribution_version,
        &platform,
        package_type,
        javafx_bundled,
    );

    let (checksum, checksum_type) = match spec.checksum {
        Checksum::Sha256 => {
            let mut c = String::with_capacity(64);
            rng.hex_into(&mut c, 64);
            (Some(c), Some("sha256"))
        }
        Checksum::Sha1 => {
            let mut c = String::with_capacity(40);
            rng.hex_into(&mut c, 40);
            (Some(c), Some("sha1"))
        }
        Checksum::TypeOnly(t) => (None, Some(t)),
        Checksum::Sparse => (None, rng.chance(8).then_some("md5")),
    };

    let size = match (package_type, spec.key) {
        (_, "graalvm_ce16" | "graalvm_community" | "mandrel") => {
            rng.range(250_000_000, 420_000_000)
        }
        ("jre", _) => rng.range(38_000_000, 62_000_000),
        _ if javafx_bundled => rng.range(210_000_000, 260_000_000),
        _ => rng.range(110_000_000, 230_000_000),
    };
    let term_of_support = if is_lts(major) {
        "lts"
    } else if rng.chance(2) {
        "mts"
    } else {
        "sts"
    };

    Package {
        id,
        distribution: spec.key,
        version,
        distribution_version,
        architecture: platform.arch,
        operating_system: platform.os,
        package_type,
        archive_type: platform.archive,
        download_url: url,
        checksum,
        checksum_type,
        size,
        lib_c_type: platform.libc,
        javafx_bundled,
        term_of_support,
        release_status: if ea { "ea" } else { "ga" },
        latest_build_available: rng.chance(12),
    }
}

fn download_url(
    rng: &mut SplitMix64,
    spec: &DistSpec,
    version: &Version,
    dv: &Version,
    p: &Platform,
    pt: &str,
    fx: bool,
) -> String {
    let v = dotted(&version.components);
    let major = version.components.first().copied().unwrap_or(21);
    let b = version
        .build
        .as_ref()
        .and_then(|b| b.first().copied())
        .unwrap_or(1);
    let e = ext(p.archive);
    let (os, arch) = (p.os, p.arch);
    match spec.key {
        "temurin" => {
            let os_t = match os {
                "macos" => "mac",
                "alpine_linux" => "alpine-linux",
                o => o,
            };
            let arch_t = match arch {
                "arm32" => "arm",
                "x86" => "x86-32",
                a => a,
            };
            if major == 8 {
                let u = version.components.get(2).copied().unwrap_or(0);
                format!(
                    "https://github.com/adoptium/temurin8-binaries/releases/download/jdk8u{u}-b{b:02}/OpenJDK8U-{pt}_{arch_t}_{os_t}_hotspot_8u{u}b{b:02}.{e}"
                )
            } else {
                let vu = v.replace('.', "_");
                format!(
                    "https://github.com/adoptium/temurin{major}-binaries/releases/download/jdk-{v}%2B{b}/OpenJDK{major}U-{pt}_{arch_t}_{os_t}_hotspot_{vu}_{b}.{e}"
                )
            }
        }
        "corretto" => {
            let dvs = dotted(&dv.components);
            let os_c = match os {
                "macos" => "macosx",
                "alpine_linux" => "alpine-linux",
                o => o,
            };
            format!(
                "https://corretto.aws/downloads/resources/{dvs}/amazon-corretto-{dvs}-{os_c}-{arch}.{e}"
            )
        }
        "zulu" => {
            let dvs = dotted(&dv.components);
            let os_z = match os {
                "windows" => "win",
                "macos" => "macosx",
                "alpine_linux" => "linux_musl",
                o => o,
            };
            let arch_z = match arch {
                "arm32" => "aarch32hf",
                "x86" => "i686",
                a => a,
            };
            let fxs = if fx { "fx-" } else { "" };
            format!("https://cdn.azul.com/zulu/bin/zulu{dvs}-ca-{fxs}{pt}{v}-{os_z}_{arch_z}.{e}")
        }
        "liberica" => {
            let os_l = match os {
                "alpine_linux" => "linux-musl",
                o => o,
            };
            let arch_l = match arch {
                "x64" => "amd64",
                "arm32" => "arm32-vfp-hflt",
                "x86" => "i586",
                a => a,
            };
            let full = if fx { "-full" } else { "" };
            format!(
                "https://github.com/bell-sw/Liberica/releases/download/{v}+{b}/bellsoft-{pt}{v}+{b}-{os_l}-{arch_l}{full}.{e}"
            )
        }
        "microsoft" => format!("https://aka.ms/download-jdk/microsoft-jdk-{v}-{os}-{arch}.{e}"),
        "sap_machine" => format!(
            "https://github.com/SAP/SapMachine/releases/download/sapmachine-{v}/sapmachine-{pt}-{v}_{os}-{arch}_bin.{e}"
        ),
        "semeru" => {
            let j9 = 30 + rng.below(22);
            format!(
                "https://github.com/ibmruntimes/semeru{major}-binaries/releases/download/jdk-{v}%2B{b}_openj9-0.{j9}.0/ibm-semeru-open-{pt}_{arch}_{os}_{v}_{b}_openj9-0.{j9}.0.{e}"
            )
        }
        "dragonwell" => format!(
            "https://github.com/dragonwell-project/dragonwell{major}/releases/download/dragonwell-standard-{v}_jdk-{v}-ga/Alibaba_Dragonwell_Standard_{v}_{arch}_{os}.{e}"
        ),
        "kona" => format!(
            "https://github.com/Tencent/TencentKona-{major}/releases/download/kona{v}/TencentKona-{v}.b{b}-jdk_{os}-{arch}.{e}"
        ),
        "graalvm_community" => format!(
            "https://github.com/graalvm/graalvm-ce-builds/releases/download/jdk-{v}/graalvm-community-jdk-{v}_{os}-{arch}_bin.{e}"
        ),
        "mandrel" => {
            let m = format!("{major}.{}.{}.0", rng.below(2), rng.below(6));
            format!(
                "https://github.com/graalvm/mandrel/releases/download/mandrel-{m}-Final/mandrel-java{major}-{os}-{arch}-{m}-Final.{e}"
            )
        }
        "graalvm_ce16" => {
            let g = dotted(&dv.components);
            format!(
                "https://github.com/graalvm/graalvm-ce-builds/releases/download/vm-{g}.0/graalvm-ce-java16-{os}-amd64-{g}.0.{e}"
            )
        }
        _ => {
            let mut h = String::with_capacity(32);
            rng.hex_into(&mut h, 32);
            format!(
                "https://download.java.net/java/GA/jdk{v}/{h}/{b}/GPL/openjdk-{v}_{os}-{arch}_bin.{e}"
            )
        }
    }
}

/// Foojay-style synonyms: every alias of every distribution in lower,
/// UPPER and Title case, mapped to the canonical distribution name.
pub fn synonyms() -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = Vec::new();
    for spec in CATALOG {
        let mut names: Vec<&str> = vec![spec.key];
        names.extend(spec.aliases.iter().copied());
        for name in names {
            let title: String = name
                .split('_')
                .map(|w| {
                    let mut c = w.chars();
                    match c.next() {
                        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
                        None => String::new(),
                    }
                })
                .collect::<Vec<_>>()
                .join("_");
            let mut variants = vec![name.to_string(), name.to_ascii_uppercase(), title.clone()];
            if name.contains('_') {
                // foojay also lists the spaced and run-together spellings.
                variants.push(name.replace('_', " "));
                variants.push(title.replace('_', " "));
                variants.push(name.replace('_', ""));
                variants.push(name.replace('_', "-"));
            }
            for variant in variants {
                if !out.iter().any(|(k, _)| *k == variant) {
                    out.push((variant, spec.key));
                }
            }
        }
    }
    out
}

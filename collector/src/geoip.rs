//! Countries of client addresses, from a MaxMind-format (`.mmdb`) database
//! named by `api.geoip_mmdb`: MaxMind's GeoLite2/GeoIP2 Country (the
//! `country.iso_code` field) or ip-location-db's country files
//! (`country_code`).

use std::net::IpAddr;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

pub struct GeoIp {
    reader: maxminddb::Reader<Vec<u8>>,
}

#[derive(Deserialize)]
struct Record {
    country: Option<Country>,
    country_code: Option<String>,
}

#[derive(Deserialize)]
struct Country {
    iso_code: Option<String>,
}

impl GeoIp {
    pub fn open(path: &Path) -> anyhow::Result<GeoIp> {
        let reader = maxminddb::Reader::open_readfile(path).with_context(|| {
            format!(
                "api.geoip_mmdb: cannot read {} as a MaxMind database",
                path.display()
            )
        })?;
        Ok(GeoIp { reader })
    }

    /// The ISO 3166 country code of an address; `None` for addresses the
    /// database does not place (private ranges) or that do not parse.
    pub fn country(&self, ip: &str) -> Option<String> {
        let ip: IpAddr = ip.trim().parse().ok()?;
        let record: Record = self.reader.lookup(ip).ok()??;
        record
            .country_code
            .or_else(|| record.country.and_then(|c| c.iso_code))
    }
}

impl std::fmt::Debug for GeoIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoIp").finish_non_exhaustive()
    }
}

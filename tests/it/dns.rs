//! A real DNS server on 127.0.0.1 (hickory-server with an in-memory zone `test.`) that tests
//! stage names on, and point the server's `--dns-resolver` at. Records have a TTL of 0, so a
//! change is seen on the next lookup.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::rr::rdata::{A, AAAA, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType, RrKey};
use hickory_server::Server;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

pub struct Dns {
    pub addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    serial: std::sync::atomic::AtomicU32,
}

impl Dns {
    pub async fn start() -> Dns {
        let origin = Name::from_str("test.").unwrap();
        let zone = InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            Name::from_str("ns.test.").unwrap(),
            Name::from_str("admin.test.").unwrap(),
            1,
            3600,
            600,
            86400,
            0,
        );
        zone.upsert(Record::from_rdata(origin.clone(), 0, RData::SOA(soa)), 1)
            .await;
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(origin.into(), vec![zone.clone()]);
        // UDP and TCP on one port: a UDP port whose TCP twin is taken (by another test's
        // listener) is dropped and another tried.
        let mut pair = None;
        for _ in 0..50 {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = socket.local_addr().unwrap();
            if let Ok(tcp) = tokio::net::TcpListener::bind(addr).await {
                pair = Some((socket, addr, tcp));
                break;
            }
        }
        let (socket, addr, tcp) = pair.expect("a port free for both UDP and TCP");
        let mut server = Server::new(catalog);
        server.register_socket(socket);
        server.register_listener(tcp, std::time::Duration::from_secs(5), 4096);
        tokio::spawn(async move {
            let _ = server.block_until_done().await;
        });
        Dns {
            addr,
            zone,
            serial: std::sync::atomic::AtomicU32::new(2),
        }
    }

    /// Adds an address to `name` (under `test.`).
    pub async fn add(&self, name: &str, ip: IpAddr) {
        let name = Name::from_str(name).unwrap();
        let data = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert!(
            self.zone
                .upsert(Record::from_rdata(name, 0, data), serial)
                .await
        );
    }

    /// Sets `name`'s TXT record to one string (replacing what it had).
    pub async fn set_txt(&self, name: &str, value: &str) {
        self.remove(name, RecordType::TXT).await;
        let name = Name::from_str(name).unwrap();
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let data = RData::TXT(TXT::new(vec![value.to_string()]));
        assert!(
            self.zone
                .upsert(Record::from_rdata(name, 0, data), serial)
                .await
        );
    }

    /// Removes `name`'s records of one type.
    pub async fn remove(&self, name: &str, kind: RecordType) {
        let name = Name::from_str(name).unwrap();
        let mut records = self.zone.records_mut().await;
        records.remove(&RrKey::new(name.into(), kind));
    }
}

//! The Twinzo stand-in keeps the contract of `shared/reference/twinzo-api.md`: each test starts
//! it on 127.0.0.1:0 and talks to it over HTTP as a client would.

use std::time::{Duration, Instant};

use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use twinzo_bridge::stub::{self, AcceptedLocation, StubConfig, StubHandle, StubStats};

const PASSWORD: &str = "stub-password";
const API_KEY: &str = "stub-api-key";
const WAIT: Duration = Duration::from_secs(10);

struct Stub {
    handle: StubHandle,
    shutdown: CancellationToken,
    http: Client,
    config: StubConfig,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn start() -> Stub {
    start_with(StubConfig::default()).await
}

async fn start_with(config: StubConfig) -> Stub {
    let shutdown = CancellationToken::new();
    let listen = "127.0.0.1:0".parse().unwrap();
    let handle = stub::spawn(config.clone(), listen, shutdown.clone())
        .await
        .unwrap();
    Stub {
        handle,
        shutdown,
        http: Client::new(),
        config,
    }
}

impl Stub {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.handle.url())
    }

    async fn authenticate(&self, login: &str, password: &str) -> Value {
        let body = json!({"Client": "demo", "Login": login, "Password": password});
        let response = self
            .http
            .post(self.url("/v3/authorization/authenticate"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn token(&self, login: &str) -> String {
        let auth = self.authenticate(login, PASSWORD).await;
        auth["Token"].as_str().unwrap().to_owned()
    }

    /// A device-mode post with the three signing headers and a raw JSON body.
    fn device_post(&self, token: &str, body: &str) -> RequestBuilder {
        self.http
            .post(self.url("/v3/localization"))
            .header("Client", self.config.client_guid.to_string())
            .header("Branch", self.config.branch_guid.to_string())
            .header("Token", token)
            .header("Content-Type", "application/json")
            .body(body.to_owned())
    }

    fn batch_post(&self, api_key: &str, body: &str) -> RequestBuilder {
        self.http
            .post(self.url("/v3/localization/batch"))
            .header("Client", self.config.client_guid.to_string())
            .header("Branch", self.config.branch_guid.to_string())
            .header("Api-Key", api_key)
            .header("Content-Type", "application/json")
            .body(body.to_owned())
    }

    fn api_key_get(&self, path: &str) -> RequestBuilder {
        self.http
            .get(self.url(path))
            .header("Client", self.config.client_guid.to_string())
            .header("Branch", self.config.branch_guid.to_string())
            .header("Api-Key", API_KEY)
    }
}

fn location(timestamp: i64) -> String {
    format!(
        r#"{{"Timestamp": {timestamp}, "SectorId": 1, "X": 1500.5, "Y": 2500.0, "Z": 0,
            "Battery": 79, "IsMoving": true, "Interval": 1000,
            "LocalizationAreas": [], "NoGoAreas": []}}"#
    )
}

async fn status_and_body(response: Response) -> (StatusCode, String) {
    let status = response.status();
    (status, response.text().await.unwrap())
}

async fn validation_errors(response: Response) -> Value {
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], 400);
    assert!(body["title"].is_string(), "{body}");
    body["errors"].clone()
}

/// Polls `condition` every 20 ms until it holds or `WAIT` runs out.
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn authenticate_returns_a_token_with_expiration_and_guids() {
    let stub = start().await;

    let auth = stub.authenticate("tugger-01", PASSWORD).await;

    assert_eq!(auth["Success"], true);
    assert_eq!(auth["ErrorMessage"], Value::Null);
    assert!(auth["Token"].as_str().is_some_and(|t| t.len() >= 32));
    let created = auth["Created"].as_i64().unwrap();
    assert_eq!(auth["Expiration"].as_i64().unwrap() - created, 86_400_000);
    assert_eq!(auth["Client"], stub.config.client_guid.to_string());
    assert_eq!(auth["Branch"], stub.config.branch_guid.to_string());
    assert_eq!(stub.handle.stats().auth_ok, 1);
}

#[tokio::test]
async fn authenticate_refusals_are_http_200_with_success_false() {
    let stub = start().await;

    let wrong_password = stub.authenticate("tugger-01", "nope").await;
    let unknown_login = stub.authenticate("ghost", PASSWORD).await;
    let other_client = stub
        .http
        .post(stub.url("/v3/authorization/authenticate"))
        .json(&json!({"client": "acme", "login": "tugger-01", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(other_client.status(), StatusCode::OK);
    let other_client: Value = other_client.json().await.unwrap();

    for refused in [wrong_password, unknown_login, other_client] {
        assert_eq!(refused["Success"], false, "{refused}");
        assert!(refused["ErrorMessage"].is_string(), "{refused}");
        assert_eq!(refused["Token"], Value::Null, "{refused}");
    }
    assert_eq!(stub.handle.stats().auth_failed, 3);
}

#[tokio::test]
async fn localization_without_a_token_is_401_with_an_empty_body() {
    let stub = start().await;

    let response = stub
        .http
        .post(stub.url("/v3/localization"))
        .header("Client", stub.config.client_guid.to_string())
        .header("Branch", stub.config.branch_guid.to_string())
        .header("Content-Type", "application/json")
        .body(format!("[{}]", location(1)))
        .send()
        .await
        .unwrap();

    assert_eq!(
        status_and_body(response).await,
        (StatusCode::UNAUTHORIZED, String::new())
    );
    assert_eq!(stub.handle.stats().rejected_requests, 1);
}

#[tokio::test]
async fn a_bearer_authorization_header_alone_is_401() {
    let stub = start().await;
    let token = stub.token("tugger-01").await;

    let response = stub
        .http
        .post(stub.url("/v3/localization"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .body(format!("[{}]", location(1)))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(stub.handle.accepted().is_empty());
}

#[tokio::test]
async fn a_token_with_another_branch_header_is_401() {
    let stub = start().await;
    let token = stub.token("tugger-01").await;

    let response = stub
        .http
        .post(stub.url("/v3/localization"))
        .header("Client", stub.config.client_guid.to_string())
        .header("Branch", uuid::Uuid::nil().to_string())
        .header("Token", token)
        .json(&json!([{"Timestamp": 1, "SectorId": 1, "X": 1, "Y": 2}]))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_expired_token_is_401() {
    let stub = start().await;
    stub.handle.set_token_ttl(Duration::from_secs(1));
    let token = stub.token("tugger-01").await;
    let first = stub
        .device_post(&token, &format!("[{}]", location(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::OK);

    eventually("the token has expired", || async {
        let response = stub
            .device_post(&token, &format!("[{}]", location(2)))
            .send()
            .await;
        response.unwrap().status() == StatusCode::UNAUTHORIZED
    })
    .await;

    let fresh = stub.token("tugger-01").await;
    let after = stub
        .device_post(&fresh, &format!("[{}]", location(3)))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::OK);
}

#[tokio::test]
async fn device_mode_stores_locations_and_answers_per_location() {
    let stub = start().await;
    let token = stub.token("tugger-01").await;

    let response = stub
        .device_post(
            &token,
            &format!("[{}, {}]", location(1_000), location(2_000)),
        )
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["Login"], "tugger-01");
    assert_eq!(body["Success"], true);
    assert_eq!(body["ErrorMessage"], Value::Null);
    assert_eq!(
        body["Locations"][1],
        json!({"Timestamp": 2000, "Action": "Create", "Success": true, "ErrorMessage": null})
    );
    let accepted = stub.handle.accepted();
    assert_eq!(accepted.len(), 2);
    let first = &accepted[0];
    assert_eq!(
        (first.login.as_str(), first.timestamp, first.sector_id),
        ("tugger-01", 1_000, 1)
    );
    assert_eq!(
        (first.x, first.y, first.battery),
        (1500.5, 2500.0, Some(79))
    );
    assert_eq!(
        (first.mode, first.is_moving, first.interval),
        ("device", Some(true), Some(1000))
    );
}

#[tokio::test]
async fn a_repeated_timestamp_is_answered_update_and_flagged_duplicate() {
    let stub = start().await;
    let token = stub.token("tugger-01").await;
    let body = format!("[{}]", location(5_000));
    stub.device_post(&token, &body).send().await.unwrap();

    let again: Value = stub
        .device_post(&token, &body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    assert_eq!(again["Locations"][0]["Action"], "Update");
    let flags: Vec<bool> = stub.handle.accepted().iter().map(|a| a.duplicate).collect();
    assert_eq!(flags, [false, true]);
    assert_eq!(stub.handle.stats().duplicates, 1);
}

#[tokio::test]
async fn a_wrapper_object_instead_of_a_bare_array_is_400() {
    let stub = start().await;
    let token = stub.token("tugger-01").await;

    let body = format!(r#"{{"Locations": [{}]}}"#, location(1));
    let response = stub.device_post(&token, &body).send().await.unwrap();

    let errors = validation_errors(response).await;
    assert!(errors["$"].is_array(), "{errors}");
    assert!(stub.handle.accepted().is_empty());
}

#[tokio::test]
async fn a_string_sector_id_is_400_keyed_by_its_path() {
    let stub = start().await;
    let token = stub.token("tugger-01").await;

    let body = r#"[{"Timestamp": 1, "SectorId": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "X": 1, "Y": 2}]"#;
    let response = stub.device_post(&token, body).send().await.unwrap();

    let errors = validation_errors(response).await;
    assert!(
        errors["$[0].SectorId"][0]
            .as_str()
            .unwrap()
            .contains("System.Int32"),
        "{errors}"
    );
}

#[tokio::test]
async fn a_fractional_or_out_of_range_battery_is_400() {
    let stub = start().await;
    let token = stub.token("tugger-01").await;

    for battery in ["79.5", "256", "-1"] {
        let body =
            format!(r#"[{{"Timestamp": 1, "SectorId": 1, "X": 1, "Y": 2, "Battery": {battery}}}]"#);
        let response = stub.device_post(&token, &body).send().await.unwrap();

        let errors = validation_errors(response).await;
        assert!(errors["$[0].Battery"].is_array(), "{battery}: {errors}");
    }
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_415() {
    let stub = start().await;
    let token = stub.token("tugger-01").await;

    let response = stub
        .http
        .post(stub.url("/v3/localization"))
        .header("Client", stub.config.client_guid.to_string())
        .header("Branch", stub.config.branch_guid.to_string())
        .header("Token", token)
        .header("Content-Type", "text/plain")
        .body(format!("[{}]", location(1)))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn a_removed_device_gets_http_200_with_success_false() {
    let stub = start().await;
    let token = stub.token("tugger-01").await;
    stub.handle.remove_device("tugger-01");

    let response = stub
        .device_post(&token, &format!("[{}]", location(1)))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"Login": "tugger-01", "Success": false,
               "ErrorMessage": "Device tugger-01 does not exist.", "Locations": []})
    );
    assert_eq!(stub.handle.stats().unknown_devices, 1);
}

#[tokio::test]
async fn batch_answers_each_login_and_fails_only_unknown_ones() {
    let stub = start().await;

    let body = format!(
        r#"[{{"Login": "tugger-01", "Locations": [{}]}},
            {{"Login": "ghost", "Locations": [{}]}},
            {{"login": "sim-3", "locations": [{}, {}]}}]"#,
        location(1),
        location(1),
        location(7),
        location(8)
    );
    let response = stub.batch_post(API_KEY, &body).send().await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let results: Vec<Value> = response.json().await.unwrap();
    let summary: Vec<_> = results
        .iter()
        .map(|r| {
            (
                r["Login"].as_str().unwrap(),
                r["Success"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [("tugger-01", true), ("ghost", false), ("sim-3", true)]
    );
    assert_eq!(results[1]["ErrorMessage"], "Device ghost does not exist.");
    assert_eq!(results[2]["Locations"].as_array().unwrap().len(), 2);
    let accepted = stub.handle.accepted();
    assert_eq!(accepted.len(), 3);
    assert!(accepted.iter().all(|a| a.mode == "batch"));
}

#[tokio::test]
async fn batch_with_a_wrong_or_unconfigured_api_key_is_401() {
    let stub = start().await;
    let wrong = stub.batch_post("not-the-key", "[]").send().await.unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    let no_key = start_with(StubConfig {
        api_key: None,
        ..StubConfig::default()
    })
    .await;
    let refused = no_key.batch_post(API_KEY, "[]").send().await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn pushed_statuses_answer_first_then_requests_succeed() {
    let stub = start().await;
    let token = stub.token("tugger-01").await;
    stub.handle.set_retry_after(Some(Duration::from_secs(1)));
    stub.handle.push_statuses(&[503, 503]);
    let body = format!("[{}]", location(1));

    let first = stub.device_post(&token, &body).send().await.unwrap();
    let second = stub.device_post(&token, &body).send().await.unwrap();
    let third = stub.device_post(&token, &body).send().await.unwrap();

    assert_eq!(first.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.headers()["retry-after"], "1");
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(third.status(), StatusCode::OK);
    assert_eq!(stub.handle.accepted().len(), 1);
    let stats = stub.handle.stats();
    assert_eq!(stats.injected_faults, 2);
    assert_eq!(stats.requests_by_status.get(&503), Some(&2));
}

#[tokio::test]
async fn pushed_statuses_do_not_touch_authenticate() {
    let stub = start().await;
    stub.handle.push_statuses(&[500]);

    let auth = stub.authenticate("tugger-01", PASSWORD).await;

    assert_eq!(auth["Success"], true);
    let token = auth["Token"].as_str().unwrap();
    let response = stub.device_post(token, "[]").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn refuse_for_refuses_connections_then_listens_again() {
    let stub = start().await;
    let token = stub.token("tugger-01").await;
    let addr = stub.handle.addr;

    stub.handle.refuse_for(Duration::from_millis(500));

    let err = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let pooled = stub
        .device_post(&token, &format!("[{}]", location(1)))
        .send()
        .await;
    assert!(
        pooled.is_err(),
        "a keep-alive connection must not survive the refusal"
    );
    eventually("the stub listens again", || async {
        TcpStream::connect(addr).await.is_ok()
    })
    .await;
    let after = stub
        .device_post(&token, &format!("[{}]", location(2)))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::OK);
}

#[tokio::test]
async fn latency_delays_twinzo_responses() {
    let stub = start().await;
    stub.handle.set_latency(Duration::from_millis(300));

    let started = Instant::now();
    stub.authenticate("tugger-01", PASSWORD).await;

    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn devices_and_sectors_are_served_to_signed_requests() {
    let stub = start().await;

    let device = stub
        .api_key_get("/v3/devices/login/tugger-02")
        .send()
        .await
        .unwrap();
    let unknown = stub
        .api_key_get("/v3/devices/login/ghost")
        .send()
        .await
        .unwrap();
    let sectors = stub.api_key_get("/v3/sectors").send().await.unwrap();
    let unsigned = stub.http.get(stub.url("/v3/sectors")).send().await.unwrap();

    assert_eq!(device.status(), StatusCode::OK);
    let device: Value = device.json().await.unwrap();
    assert_eq!(
        (device["Login"].as_str(), device["SectorId"].as_i64()),
        (Some("tugger-02"), Some(1))
    );
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let sectors: Value = sectors.json().await.unwrap();
    assert_eq!(sectors[0]["SectorWidth"], 100_000.0);
    assert_eq!(sectors[0]["SectorHeight"], 60_000.0);
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn unknown_routes_are_404_with_an_empty_body() {
    let stub = start().await;

    let response = stub
        .http
        .get(stub.url("/v2/whatever"))
        .send()
        .await
        .unwrap();

    assert_eq!(
        status_and_body(response).await,
        (StatusCode::NOT_FOUND, String::new())
    );
}

#[tokio::test]
async fn control_endpoints_inject_faults_report_and_reset() {
    let stub = start().await;
    let token = stub.token("tugger-01").await;
    let faults = json!({"statuses": [429], "retry_after_s": 3, "latency_ms": 0});
    let set = stub
        .http
        .post(stub.url("/_stub/faults"))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::OK);

    let throttled = stub
        .device_post(&token, &format!("[{}]", location(1)))
        .send()
        .await
        .unwrap();
    let accepted = stub
        .device_post(&token, &format!("[{}]", location(1)))
        .send()
        .await
        .unwrap();
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.headers()["retry-after"], "3");
    assert_eq!(accepted.status(), StatusCode::OK);

    let get = |path: &'static str| stub.http.get(stub.url(path)).send();
    let listed: Vec<AcceptedLocation> = get("/_stub/accepted").await.unwrap().json().await.unwrap();
    assert_eq!(listed, stub.handle.accepted());
    let stats: StubStats = get("/_stub/stats").await.unwrap().json().await.unwrap();
    assert_eq!((stats.accepted, stats.injected_faults), (1, 1));
    let requests: Vec<Value> = get("/_stub/requests?last=1")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["status"], 200);
    assert_eq!(requests[0]["body"][0]["Timestamp"], 1);

    let reset = stub
        .http
        .post(stub.url("/_stub/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), StatusCode::NO_CONTENT);
    assert!(stub.handle.accepted().is_empty());
    assert_eq!(stub.handle.stats(), StubStats::default());
}

#[tokio::test]
async fn control_refusal_answers_first_then_refuses_until_the_window_ends() {
    let stub = start().await;
    let addr = stub.handle.addr;

    let body = json!({"refuse_ms": 400});
    let response = stub
        .http
        .post(stub.url("/_stub/faults"))
        .json(&body)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let err = TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    eventually("the stub listens again", || async {
        TcpStream::connect(addr).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn control_devices_add_and_remove_logins() {
    let stub = start().await;
    let change =
        json!({"add": [{"login": "forklift-9", "password": "own"}], "remove": ["tugger-02"]});

    let response = stub
        .http
        .post(stub.url("/_stub/devices"))
        .json(&change)
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        stub.authenticate("forklift-9", "own").await["Success"],
        true
    );
    assert_eq!(
        stub.authenticate("tugger-02", PASSWORD).await["Success"],
        false
    );
}

#[tokio::test]
async fn cancelling_shutdown_stops_the_server() {
    let stub = start().await;
    let addr = stub.handle.addr;

    stub.shutdown.cancel();
    tokio::time::timeout(WAIT, stub.handle.closed())
        .await
        .unwrap();

    assert!(TcpStream::connect(addr).await.is_err());
}

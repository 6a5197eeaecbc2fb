mod support;

use meridian_testkit::TestCluster;
use support::ProxyUnderTest;

#[tokio::test]
async fn a_query_goes_through() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;
    let row = client.query_one("SELECT 1 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
}

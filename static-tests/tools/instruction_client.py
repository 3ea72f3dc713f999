"""The client of `BENCH_ONLY=instructions static-tests/bench.sh`: registers a fixture of 100
instances on one keep-alive connection, then sends N requests of one kind, pipelined 100 at a
time, and reads every answer.  Usage: instruction_client.py HOST PORT hb|svc|reg|new|renew N
(reg registers the same instance again each time, new a new instance of the same service each
time, as the throughput benchmark's row (c) does)."""
import socket, sys, json, time, re
host, port = sys.argv[1], int(sys.argv[2])
mode, n = sys.argv[3], int(sys.argv[4])
s = socket.create_connection((host, port))
def rt(req, count, batch=None):
    buf=b''
    s.sendall(batch if batch is not None else req*count)
    got=0
    while got<count:
        d=s.recv(1<<20)
        if not d: raise SystemExit("closed")
        buf+=d
        # count complete responses by header terminator + content-length
        while True:
            i=buf.find(b'\r\n\r\n')
            if i<0: break
            head=buf[:i].decode()
            m=re.search(r'(?i)content-length: (\d+)', head)
            L=int(m.group(1)) if m else 0
            if len(buf)<i+4+L: break
            buf=buf[i+4+L:]; got+=1
ids=[]
for k in range(100):
    body=json.dumps({"service_name":"svc","endpoint":{"type":"tcp","value":"10.0.0.%d:80"%k},"ttl":600})
    req=("POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"%(len(body),body)).encode()
    s.sendall(req)
    d=s.recv(65536).decode()
    ids.append(re.search(r'"id":"([0-9a-f]+)"', d).group(1))
if mode=='hb':
    req=("PUT /api/v1/instances/%s/heartbeat HTTP/1.1\r\nHost: x\r\n\r\n"%ids[0]).encode()
elif mode=='reg':
    body=json.dumps({"service_name":"svc","endpoint":{"type":"tcp","value":"10.0.0.1:80"},"ttl":600})
    req=("POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"%(len(body),body)).encode()
elif mode=='svc':
    req=b"GET /api/v1/services/svc HTTP/1.1\r\nHost: x\r\n\r\n"
elif mode=='renew':
    body=json.dumps({"instance":{"instanceId":"i1","hostName":"h","app":"APP","ipAddr":"10.0.0.1","status":"UP","port":{"$":80,"@enabled":"true"},"vipAddress":"app","dataCenterInfo":{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"}}})
    r=("POST /eureka/v2/apps/APP HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"%(len(body),body)).encode()
    rt(r,1)
    req=b"PUT /eureka/v2/apps/APP/i1 HTTP/1.1\r\nHost: x\r\n\r\n"
def registration(k):
    body=json.dumps({"service_name":"svc","endpoint":{"type":"tcp","value":"host-%05d:80"%k},"ttl":600})
    return ("POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"%(len(body),body)).encode()
if mode=='new':
    # A counter of fixed width: every body is as long as the others.
    for start in range(0, n, 100):
        rt(None, 100, b''.join(registration(k) for k in range(start, start+100)))
    sys.exit(0)
for _ in range(n//100):
    rt(req,100)
